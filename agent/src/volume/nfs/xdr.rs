//! XDR (RFC 4506) encoding and decoding of the few types ONC RPC, MOUNT and NFSv3 use.

use super::NfsError;

/// Most bytes an opaque or string may claim (a reply is bounded by the record size anyway).
const MAX_OPAQUE: usize = 1 << 20;

/// An XDR encoder.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The bytes so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A boolean.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u32(u32::from(v))
    }

    /// Variable-length opaque data (length, bytes, padding to 4).
    pub fn opaque(&mut self, data: &[u8]) -> &mut Self {
        self.u32(data.len() as u32);
        self.fixed(data)
    }

    /// Fixed-length opaque data (bytes, padding to 4).
    pub fn fixed(&mut self, data: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(data);
        let pad = (4 - data.len() % 4) % 4;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A string.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.opaque(s.as_bytes())
    }
}

/// An XDR decoder over a reply.
#[derive(Debug)]
pub struct Decoder<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    /// Decodes `data` from the start.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], NfsError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| NfsError::Protocol("reply ends early".into()))?;
        let out = &self.data[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// An unsigned 32-bit integer.
    pub fn u32(&mut self) -> Result<u32, NfsError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned 64-bit integer.
    pub fn u64(&mut self) -> Result<u64, NfsError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    /// A boolean.
    pub fn bool(&mut self) -> Result<bool, NfsError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(NfsError::Protocol(format!("boolean {other}"))),
        }
    }

    /// Fixed-length opaque data.
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8], NfsError> {
        let out = self.take(n)?;
        self.take((4 - n % 4) % 4)?;
        Ok(out)
    }

    /// Variable-length opaque data of at most `max` bytes.
    pub fn opaque(&mut self, max: usize) -> Result<&'a [u8], NfsError> {
        let n = self.u32()? as usize;
        if n > max.min(MAX_OPAQUE) {
            return Err(NfsError::Protocol(format!(
                "opaque of {n} bytes (at most {max})"
            )));
        }
        self.fixed(n)
    }

    /// A UTF-8 string (lossy).
    pub fn string(&mut self, max: usize) -> Result<String, NfsError> {
        Ok(String::from_utf8_lossy(self.opaque(max)?).into_owned())
    }

    /// How many bytes were read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), NfsError> {
        self.take(n).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut e = Encoder::new();
        e.u32(7)
            .u64(1 << 40)
            .bool(true)
            .string("abcde")
            .opaque(&[1, 2, 3, 4]);
        let bytes = e.into_bytes();
        assert_eq!(bytes.len(), 4 + 8 + 4 + (4 + 8) + (4 + 4));
        let mut d = Decoder::new(&bytes);
        assert_eq!(d.u32().unwrap(), 7);
        assert_eq!(d.u64().unwrap(), 1 << 40);
        assert!(d.bool().unwrap());
        assert_eq!(d.string(255).unwrap(), "abcde");
        assert_eq!(d.opaque(64).unwrap(), [1, 2, 3, 4]);
        assert!(d.u32().is_err());
        let mut d = Decoder::new(&[0, 0, 0, 100, 1]);
        assert!(d.opaque(64).is_err());
    }
}
