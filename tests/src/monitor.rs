//! Capturing MONITOR output over a raw socket, to check what a watcher of the server can see.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A connection in MONITOR mode.
pub struct Monitor {
    reader: BufReader<TcpStream>,
}

impl Monitor {
    /// Connects to `port` and enters MONITOR mode.
    pub fn start(port: u16) -> Monitor {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connecting monitor");
        stream
            .write_all(b"*1\r\n$7\r\nMONITOR\r\n")
            .expect("sending MONITOR");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("monitor timeout");
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("reading MONITOR reply");
        assert!(line.starts_with("+OK"), "MONITOR answered {line:?}");
        Monitor { reader }
    }

    /// Everything the monitor saw until nothing arrived for `quiet`.
    pub fn finish(mut self, quiet: Duration) -> String {
        self.reader
            .get_ref()
            .set_read_timeout(Some(quiet))
            .expect("monitor timeout");
        let until = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let mut chunk = [0u8; 4096];
        while Instant::now() < until {
            match self.reader.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&seen).into_owned()
    }
}
