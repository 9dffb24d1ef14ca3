//! Tests of the metadata service: every tree path through [`super::router`] with a fake
//! source (`trees.rs`), and real servers in network namespaces reached by curl and by
//! cloud-init's own readers (`real.rs`, run as root).

pub(super) mod fake;
mod real;
mod trees;
