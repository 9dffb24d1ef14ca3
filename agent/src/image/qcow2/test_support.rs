//! Test helpers shared by the image tests: running `qemu-img`/`qemu-io` and building images by
//! hand.

use std::process::Command;

use super::header::{encode_v3, Qcow2Header};
use super::table::{OverlayLayout, REFCOUNT_ORDER};

fn run(tool: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {tool} ({e}): install qemu-utils (apt-get install qemu-utils)")
    });
    assert!(
        out.status.success(),
        "{tool} {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `qemu-img` with `args`, panics unless it succeeds, returns its stdout.
pub(crate) fn qemu_img(args: &[&str]) -> String {
    String::from_utf8_lossy(&run("qemu-img", args).stdout).into_owned()
}

/// Runs `qemu-img` with `args` and returns (success, stdout + stderr), for checks expected to
/// fail.
pub(crate) fn qemu_img_status(args: &[&str]) -> (bool, String) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run qemu-img ({e}): install qemu-utils"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `qemu-io` with `args`, panics unless it succeeds, returns its stdout.
pub(crate) fn qemu_io(args: &[&str]) -> String {
    String::from_utf8_lossy(&run("qemu-io", args).stdout).into_owned()
}

/// A valid, empty v3 image of `virtual_size` bytes, built in memory the way
/// [`super::create_overlay`] lays it out, optionally naming a qcow2 backing file.
pub(crate) fn synthetic_image(backing: Option<&str>, virtual_size: u64) -> Vec<u8> {
    let layout = OverlayLayout::new(virtual_size, 16).expect("layout");
    let header = Qcow2Header {
        version: 3,
        cluster_bits: 16,
        virtual_size,
        backing_file: backing.map(str::to_owned),
        backing_format: backing.map(|_| "qcow2".to_owned()),
        incompatible_features: 0,
        compatible_features: 0,
        autoclear_features: 0,
        external_data_file: None,
        crypt_method: 0,
        refcount_order: REFCOUNT_ORDER,
        header_length: 112,
        compression_type: 0,
        l1_size: layout.l1_size,
        l1_table_offset: layout.l1_table_offset,
        refcount_table_offset: layout.refcount_table_offset,
        refcount_table_clusters: 1,
        nb_snapshots: 0,
        snapshots_offset: 0,
        feature_names: Vec::new(),
        extensions: Vec::new(),
    };
    let mut img = vec![0u8; usize::try_from(layout.file_len).expect("small")];
    let head = encode_v3(&header).expect("encode");
    img[..head.len()].copy_from_slice(&head);
    let rt = usize::try_from(layout.refcount_table_offset).expect("small");
    img[rt..rt + 8].copy_from_slice(&layout.refcount_table());
    let rb = usize::try_from(layout.refcount_block_offset).expect("small");
    let block = layout.refcount_block();
    img[rb..rb + block.len()].copy_from_slice(&block);
    img
}
