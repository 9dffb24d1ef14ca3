//! Screenshots: QEMU answers libvirt's screenshot with a PPM picture (`image/x-portable-pixmap`,
//! binary P6, or a PNG on newer QEMU); the API answers PNG.

use super::ConsoleError;

/// Largest screenshot read from libvirt (a 4K screen as 8-bit RGB is 24 MiB).
pub const MAX_SCREENSHOT_BYTES: usize = 64 * 1024 * 1024;
/// Largest width or height accepted from a PPM header.
const MAX_SIDE: usize = 16_384;

/// The picture libvirt gave, as PNG.
///
/// # Errors
/// [`ConsoleError::Screenshot`] for a format or a PPM that cannot be read.
pub fn to_png(mime: &str, picture: &[u8]) -> Result<Vec<u8>, ConsoleError> {
    if picture.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Ok(picture.to_vec());
    }
    if !(mime.contains("portable-pixmap") || picture.starts_with(b"P6")) {
        return Err(ConsoleError::Screenshot(format!(
            "libvirt answered {mime:?}, which is neither PPM nor PNG"
        )));
    }
    let (width, height, pixels) = parse_ppm(picture)?;
    let mut png = Vec::with_capacity(pixels.len() / 4);
    {
        let mut encoder = png::Encoder::new(&mut png, width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder
            .write_header()
            .map_err(|e| ConsoleError::Screenshot(e.to_string()))?;
        writer
            .write_image_data(pixels)
            .map_err(|e| ConsoleError::Screenshot(e.to_string()))?;
    }
    Ok(png)
}

/// A binary PPM (P6, maxval 255): width, height and the RGB bytes.
fn parse_ppm(data: &[u8]) -> Result<(usize, usize, &[u8]), ConsoleError> {
    let bad = |why: &str| ConsoleError::Screenshot(format!("not a usable PPM: {why}"));
    let mut pos = 0;
    let field = |pos: &mut usize| -> Result<&[u8], ConsoleError> {
        // Whitespace and comments before each header field.
        loop {
            match data.get(*pos) {
                Some(b) if b.is_ascii_whitespace() => *pos += 1,
                Some(b'#') => {
                    while data.get(*pos).is_some_and(|b| *b != b'\n') {
                        *pos += 1;
                    }
                }
                Some(_) => break,
                None => return Err(bad("the header ends early")),
            }
        }
        let start = *pos;
        while data.get(*pos).is_some_and(|b| !b.is_ascii_whitespace()) {
            *pos += 1;
        }
        Ok(&data[start..*pos])
    };
    if field(&mut pos)? != b"P6" {
        return Err(bad("not P6"));
    }
    let number = |pos: &mut usize| -> Result<usize, ConsoleError> {
        std::str::from_utf8(field(pos)?)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("a header number is not a number"))
    };
    let width = number(&mut pos)?;
    let height = number(&mut pos)?;
    let maxval = number(&mut pos)?;
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        return Err(bad("the size is out of range"));
    }
    if maxval != 255 {
        return Err(bad("only 8-bit samples are supported"));
    }
    // One whitespace byte separates the header from the pixels.
    pos += 1;
    let needed = width * height * 3;
    let pixels = data
        .get(pos..pos + needed)
        .ok_or_else(|| bad("fewer pixels than the header says"))?;
    Ok((width, height, pixels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ppm_becomes_a_png_with_the_same_pixels() {
        let mut ppm = b"P6\n# made by QEMU\n2 1\n255\n".to_vec();
        ppm.extend_from_slice(&[255, 0, 0, 0, 0, 255]);
        let png = to_png("image/x-portable-pixmap", &ppm).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().unwrap();
        let mut out = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut out).unwrap();
        assert_eq!((info.width, info.height), (2, 1));
        assert_eq!(&out[..6], &[255, 0, 0, 0, 0, 255]);
    }

    #[test]
    fn bad_pictures_are_refused() {
        for bad in [
            &b"P3\n1 1\n255\n000"[..],
            b"P6\n1 1\n65535\n\0\0\0\0\0\0",
            b"P6\n99999 1\n255\n",
            b"P6\n2 2\n255\n\0\0\0",
            b"P6\n",
            b"P6\nx 1\n255\n\0\0\0",
        ] {
            assert!(to_png("image/x-portable-pixmap", bad).is_err(), "{bad:?}");
        }
        assert!(to_png("image/jpeg", b"\xff\xd8").is_err());
    }
}
