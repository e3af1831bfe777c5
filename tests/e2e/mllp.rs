//! An MLLP client for tests: frames and acknowledgements.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;

/// `msg` between MLLP's start byte and its end bytes.
pub fn frame(msg: &str) -> Vec<u8> {
    let mut v = vec![0x0b];
    v.extend_from_slice(msg.as_bytes());
    v.extend_from_slice(&[0x1c, 0x0d]);
    v
}

/// Sends one frame and reads its ACK's MSA-1 (`None`: the connection failed).
pub fn exchange(s: &mut TcpStream, msg: &[u8]) -> Option<String> {
    s.write_all(msg).ok()?;
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    while !buf.windows(2).any(|w| w == [0x1c, 0x0d]) {
        let n = s.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let msa = text.split('\r').find(|seg| seg.starts_with("MSA|"))?;
    Some(msa.split('|').nth(1)?.to_owned())
}
