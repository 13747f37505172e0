//! Duplicating a descriptor that abgate was lent as a bare number.
//!
//! pingora tells abgate which socket a request's backend connection uses only as a
//! [`RawFd`] (its `connected_to_upstream` hook). abgate's backend-silence watchdog keeps a
//! duplicate of it, so that shutting the socket down later can never act on a number the
//! process has meanwhile closed and reused. Turning a raw number into an owned descriptor
//! is `unsafe` in Rust; this crate is that one audited step, so `abgate` itself stays
//! `#![forbid(unsafe_code)]` (like `abgate-alloc` for the allocator).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// A new descriptor for the same open socket or file as `fd` (close-on-exec).
///
/// The caller must pass a descriptor that is open for the duration of the call (pingora
/// holds the backend socket open while the hook runs). The duplicate is independent:
/// closing `fd` later leaves it valid, and dropping it closes only the duplicate.
pub fn duplicate(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: `fcntl(F_DUPFD_CLOEXEC)` only reads `fd`; an invalid one yields -1 (EBADF),
    // reported as an error below.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor returned to us alone; `OwnedFd` now owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    #[test]
    fn the_duplicate_outlives_the_original_and_reaches_the_same_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let dup = duplicate(client.as_raw_fd()).unwrap();
        assert_ne!(dup.as_raw_fd(), client.as_raw_fd());
        drop(client);
        let mut via_dup = std::net::TcpStream::from(dup);
        via_dup.write_all(b"x").unwrap();
        let mut buf = [0u8; 1];
        server.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"x");
    }

    #[test]
    fn a_closed_descriptor_is_an_error() {
        assert_eq!(duplicate(-1).unwrap_err().raw_os_error(), Some(libc::EBADF));
    }
}
