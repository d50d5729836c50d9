//! Free loopback ports for the processes the tests start.

use std::{collections::BTreeSet, net::TcpListener, sync::Mutex};

/// Ports already handed out in this test binary: tests run in parallel, and
/// the OS may offer a port again once its probe listener is closed.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port on 127.0.0.1 that nothing listens on now and that no other test in
/// this binary has been given.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("bind a probe listener on 127.0.0.1:0")
            .port();
        if HANDED_OUT.lock().unwrap().insert(port) {
            return port;
        }
    }
}
