//! Helpers shared by the origin's integration tests that start the real binary.

use std::net::TcpListener;

/// A port free on 127.0.0.1 right now (the OS picks it).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
