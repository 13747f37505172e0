//! A TCP relay the test controls, to cut one client off from a server without touching
//! the server: it listens on a free loopback port (`127.0.0.1:0`, read back as
//! [`Relay::addr`]) and forwards every connection to a target address, byte for byte,
//! in both directions.
//!
//! - [`Relay::cut`] closes every connection it is forwarding (both sides, so the client
//!   reads EOF at once) and from then on accepts new connections only to close them
//!   unanswered: a client sees the server as gone, however it tries to reconnect.
//! - [`Relay::black_hole`] keeps every connection open but drops every byte, both ways
//!   (a network that loses packets without a reset: nothing tells the client).
//! - [`Relay::restore`] forwards new connections again (the cut ones stay closed) and
//!   ends a black hole.
//!
//! Plain std threads: one acceptor, and two pumps per forwarded connection (one per
//! direction). Bounded: at most [`MAX_CONNECTIONS`] forwarded at once (more are closed
//! on accept). No leaks: dropping the relay stops the acceptor, closes every connection
//! and joins every thread it started.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most connections forwarded at once; further ones are closed on accept.
pub const MAX_CONNECTIONS: usize = 64;
/// How many refusal times [`Relay::refusals`] keeps (the latest).
pub const MAX_REFUSALS_KEPT: usize = 256;

/// A running relay (see the module docs).
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    /// Whether connections are being cut.
    cut: AtomicBool,
    /// Whether bytes are dropped instead of forwarded.
    black_hole: AtomicBool,
    /// Set on drop: the acceptor returns.
    closing: AtomicBool,
    /// Forwarded connections and their pumps. Both sides of a connection are
    /// registered under this lock only while not cut, so `cut` closes all of them.
    conns: Mutex<Conns>,
    /// Connections accepted and forwarded / accepted and closed at once.
    forwarded: AtomicU64,
    refused: AtomicU64,
    /// When the last [`MAX_REFUSALS_KEPT`] refusals happened (a client's retry pace).
    refused_at: Mutex<VecDeque<Instant>>,
}

#[derive(Default)]
struct Conns {
    next_id: u64,
    /// id → (client side, target side).
    open: HashMap<u64, (TcpStream, TcpStream)>,
    /// Pump threads, joined when they finished (and all of them on drop).
    pumps: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Start a relay to `target` (e.g. `127.0.0.1:4222`), forwarding at once.
    pub fn start(target: &str) -> Relay {
        let target: SocketAddr = target.parse().expect("a socket address");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            cut: AtomicBool::new(false),
            black_hole: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            conns: Mutex::new(Conns::default()),
            forwarded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            refused_at: Mutex::new(VecDeque::new()),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || accept_loop(listener, s))
            .unwrap();
        Relay {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The address clients connect to (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `nats://127.0.0.1:<port>`: the relay as a NATS server URL.
    pub fn nats_url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Close every forwarded connection and close new ones on accept, until
    /// [`Relay::restore`].
    pub fn cut(&self) {
        let open = {
            let mut c = self.shared.conns.lock().unwrap();
            self.shared.cut.store(true, SeqCst);
            std::mem::take(&mut c.open)
        };
        for (client, server) in open.values() {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
        }
    }

    /// Keep connections open but drop every byte until [`Relay::restore`].
    pub fn black_hole(&self) {
        self.shared.black_hole.store(true, SeqCst);
    }

    /// Forward new connections again, and bytes on the open ones.
    pub fn restore(&self) {
        self.shared.cut.store(false, SeqCst);
        self.shared.black_hole.store(false, SeqCst);
    }

    /// Whether the relay is cut now.
    pub fn is_cut(&self) -> bool {
        self.shared.cut.load(SeqCst)
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(SeqCst)
    }

    /// Connections accepted and closed at once so far (while cut, or over the bound).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(SeqCst)
    }

    /// When the latest connections were refused (at most [`MAX_REFUSALS_KEPT`], oldest
    /// first): the pace of a client's reconnect attempts while cut.
    pub fn refusals(&self) -> Vec<Instant> {
        self.shared
            .refused_at
            .lock()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    /// Connections being forwarded now.
    pub fn open(&self) -> usize {
        self.shared.conns.lock().unwrap().open.len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.closing.store(true, SeqCst);
        // Wake the acceptor, blocked in accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        self.cut();
        let pumps = std::mem::take(&mut self.shared.conns.lock().unwrap().pumps);
        for p in pumps {
            let _ = p.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.closing.load(SeqCst) {
            return;
        }
        let Ok(client) = conn else { continue };
        if shared.cut.load(SeqCst) {
            refuse(&shared, client);
            continue;
        }
        // Connect outside the lock (bounded), then register under it unless cut meanwhile.
        let server = match TcpStream::connect_timeout(&shared.target, Duration::from_secs(2)) {
            Ok(s) => s,
            Err(_) => {
                refuse(&shared, client);
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let streams = (
            client.try_clone(),
            server.try_clone(),
            server.try_clone(),
            client.try_clone(),
        );
        let (Ok(c_read), Ok(s_write), Ok(s_read), Ok(c_write)) = streams else {
            let _ = server.shutdown(Shutdown::Both);
            refuse(&shared, client);
            continue;
        };
        let mut conns = shared.conns.lock().unwrap();
        // Join the pumps that are done, so the list stays as short as the open set.
        let (done, running): (Vec<_>, Vec<_>) =
            conns.pumps.drain(..).partition(JoinHandle::is_finished);
        conns.pumps = running;
        for p in done {
            let _ = p.join();
        }
        if shared.cut.load(SeqCst) || conns.open.len() >= MAX_CONNECTIONS {
            drop(conns);
            let _ = server.shutdown(Shutdown::Both);
            refuse(&shared, client);
            continue;
        }
        let id = conns.next_id;
        conns.next_id += 1;
        conns.open.insert(id, (client, server));
        for (from, to) in [(c_read, s_write), (s_read, c_write)] {
            let s = shared.clone();
            let pump = std::thread::Builder::new()
                .name("relay-pump".into())
                .spawn(move || pump(from, to, id, s))
                .unwrap();
            conns.pumps.push(pump);
        }
        shared.forwarded.fetch_add(1, SeqCst);
    }
}

/// Close an accepted connection unanswered.
fn refuse(shared: &Shared, client: TcpStream) {
    let _ = client.shutdown(Shutdown::Both);
    shared.refused.fetch_add(1, SeqCst);
    let mut at = shared.refused_at.lock().unwrap();
    if at.len() == MAX_REFUSALS_KEPT {
        at.pop_front();
    }
    at.push_back(Instant::now());
}

/// Copy `from` to `to` until either side ends, then close the whole connection (both
/// directions, both sockets) and forget it.
fn pump(mut from: TcpStream, mut to: TcpStream, id: u64, shared: Arc<Shared>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) if shared.black_hole.load(SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    shared.conns.lock().unwrap().open.remove(&id);
}
