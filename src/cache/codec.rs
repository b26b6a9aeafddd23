//! The stored form of a cached value: MessagePack (rmp-serde), gzip-compressed
//! (flate2) above a size threshold, behind one header byte that says which.
//!
//! Tiny values (a count, an empty page) grow under gzip: its header and
//! trailer alone are 18 bytes. Below `raw_below` bytes they are stored as
//! plain MessagePack; `cargo bench --bench load` reports the measured sizes.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::Serialize;
use serde::de::DeserializeOwned;

const RAW: u8 = 0xC0;
const GZIP: u8 = 0xC1;

/// Largest decompressed value accepted: guards against a corrupt or hostile
/// file that inflates without bound.
const MAX_DECODED_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug)]
pub struct Codec {
    pub level: u32,
    pub raw_below: usize,
}

/// An encoded value and the size of its MessagePack form (for the ratio).
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub plain_len: usize,
}

impl Codec {
    pub fn encode<T: Serialize>(&self, value: &T) -> anyhow::Result<Encoded> {
        let plain = rmp_serde::to_vec(value)?;
        let plain_len = plain.len();
        if plain_len < self.raw_below {
            let mut bytes = Vec::with_capacity(plain_len + 1);
            bytes.push(RAW);
            bytes.extend_from_slice(&plain);
            return Ok(Encoded { bytes, plain_len });
        }
        let mut out = Vec::with_capacity(plain_len / 3 + 32);
        out.push(GZIP);
        let mut encoder = GzEncoder::new(out, Compression::new(self.level));
        encoder.write_all(&plain)?;
        let bytes = encoder.finish()?;
        Ok(Encoded { bytes, plain_len })
    }

    /// `None` for anything that is not a value this codec wrote: the caller
    /// treats it as a miss.
    pub fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Option<T> {
        let (&kind, body) = bytes.split_first()?;
        match kind {
            RAW => rmp_serde::from_slice(body).ok(),
            GZIP => {
                let mut plain = Vec::with_capacity(body.len() * 4);
                GzDecoder::new(body)
                    .take(MAX_DECODED_BYTES)
                    .read_to_end(&mut plain)
                    .ok()?;
                rmp_serde::from_slice(&plain).ok()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_small_and_large_values() {
        let codec = Codec {
            level: 1,
            raw_below: 64,
        };
        let small = 42u64;
        let large: Vec<String> = (0..500)
            .map(|i| format!("Harbor Youth Alliance {i}"))
            .collect();
        let e = codec.encode(&small).unwrap();
        assert_eq!(e.bytes[0], RAW);
        assert_eq!(codec.decode::<u64>(&e.bytes), Some(42));
        let e = codec.encode(&large).unwrap();
        assert_eq!(e.bytes[0], GZIP);
        assert!(
            e.bytes.len() < e.plain_len / 3,
            "repetitive text compresses"
        );
        assert_eq!(codec.decode::<Vec<String>>(&e.bytes), Some(large));
    }

    #[test]
    fn garbage_is_a_miss_never_a_panic() {
        let codec = Codec {
            level: 1,
            raw_below: 64,
        };
        for bytes in [
            &b""[..],
            b"\xC1",
            b"\xC1\x1f\x8b\x08garbage",
            b"\xC0\xff\xff",
            b"plain text",
            &[0u8; 100],
        ] {
            assert_eq!(codec.decode::<Vec<String>>(bytes), None);
        }
        // A valid value of another type is refused too.
        let e = codec.encode(&"text").unwrap();
        assert_eq!(codec.decode::<Vec<u64>>(&e.bytes), None);
        // Truncated gzip.
        let big: Vec<u64> = (0..10_000).collect();
        let e = codec.encode(&big).unwrap();
        assert_eq!(
            codec.decode::<Vec<u64>>(&e.bytes[..e.bytes.len() / 2]),
            None
        );
    }
}
