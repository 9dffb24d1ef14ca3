//! The server's UDP socket: 0.0.0.0:67 bound to one interface.
//!
//! The socket is opened on a thread inside the namespace ([`crate::net::netns::run_in`]) and
//! stays in it; the caller then hands it to tokio. std cannot set options before `bind`, so
//! the few system calls are made here directly.

use std::io;
use std::mem;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Which step of opening the socket failed, and why.
#[derive(Debug)]
pub struct SocketError {
    /// The step, e.g. `set SO_BINDTODEVICE`.
    pub step: &'static str,
    /// The OS error.
    pub source: io::Error,
}

/// Sets an integer socket option.
fn set_int(fd: &OwnedFd, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `fd` is an open socket; the value points to a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&raw const value).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Opens a non-blocking UDP socket on 0.0.0.0:`port` with `SO_REUSEADDR`, `SO_BROADCAST` and
/// `SO_BINDTODEVICE(ifname)`, in the calling thread's network namespace. The server uses port
/// 67; the tests' and the benchmark's raw client use 68.
pub fn open(ifname: &str, port: u16) -> Result<UdpSocket, SocketError> {
    let fail = |step| move |source| SocketError { step, source };
    // SAFETY: plain socket(2) call; the returned descriptor is owned right below.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            libc::IPPROTO_UDP,
        )
    };
    if raw < 0 {
        return Err(fail("create a UDP socket")(io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int(&fd, libc::SO_REUSEADDR, 1).map_err(fail("set SO_REUSEADDR"))?;
    set_int(&fd, libc::SO_BROADCAST, 1).map_err(fail("set SO_BROADCAST"))?;
    // SAFETY: the option value is the interface name's bytes with their exact length (the
    // kernel copies at most IFNAMSIZ and NUL-terminates itself).
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr().cast(),
            ifname.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(fail("set SO_BINDTODEVICE")(io::Error::last_os_error()));
    }
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::UNSPECIFIED).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_in and the length is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(fail("bind the UDP port on 0.0.0.0")(
            io::Error::last_os_error(),
        ));
    }
    Ok(UdpSocket::from(fd))
}
