//go:build linux

package evloop

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The system calls of an event loop, made raw. None of them can wait:
// the sockets are non-blocking and epoll_wait is asked not to wait. A raw
// call keeps the loop's processor, as Go's own poller keeps it for its
// epoll calls; through syscall.Syscall, the runtime would count the
// processor as blocked, and its monitor would hand it to another thread
// when a call (a connect, a close) happened to last past its tick, at
// the cost of thread switches for the loop and everything else.

// errno turns a raw call's error number into an error; comparisons with
// unix.EAGAIN and the like hold.
func errno(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Read reads from the socket fd. recvfrom and sendto go to the socket
// directly, where read and write pass through the file layer first (its
// position lock, its checks and notifications) for nothing.
func Read(fd int, p []byte) (int, syscall.Errno) { return rawIO(unix.SYS_RECVFROM, fd, p, 0) }

// Write writes to the socket fd; a peer that reset the connection is
// EPIPE, without a signal.
func Write(fd int, p []byte) (int, syscall.Errno) {
	return rawIO(unix.SYS_SENDTO, fd, p, unix.MSG_NOSIGNAL)
}

// rawIO makes a recvfrom or sendto call (trap) on fd with p and flags,
// and no address; or a read or write, which take no flags.
func rawIO(trap uintptr, fd int, p []byte, flags int) (int, syscall.Errno) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(ptr), uintptr(len(p)), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// Close closes fd (which takes it out of every epoll set).
func Close(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return errno(e)
}

// ShutdownWrite ends fd's sending side (a TCP FIN).
func ShutdownWrite(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_SHUTDOWN, uintptr(fd), unix.SHUT_WR, 0)
	return errno(e)
}

func epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	return errno(e)
}

// epollPoll collects the events that are ready, without waiting.
func epollPoll(epfd int, events []unix.EpollEvent) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// GetsockoptInt reads an int socket option.
func GetsockoptInt(fd, level, opt int) (int, error) {
	var v int32
	l := uint32(unsafe.Sizeof(v))
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	return int(v), errno(e)
}

// SetsockoptInt sets an int socket option.
func SetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt), uintptr(unsafe.Pointer(&v)), unsafe.Sizeof(v), 0)
	return errno(e)
}

// Socket opens a non-blocking TCP socket for addr's family.
func Socket(addr netip.AddrPort) (int, error) {
	family := unix.AF_INET6
	if addr.Addr().Is4() {
		family = unix.AF_INET
	}
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// Connect starts connecting fd to addr; a non-blocking socket answers
// EINPROGRESS.
func Connect(fd int, addr netip.AddrPort) syscall.Errno {
	var (
		p    unsafe.Pointer
		size uintptr
		sa4  unix.RawSockaddrInet4
		sa6  unix.RawSockaddrInet6
	)
	if a := addr.Addr(); a.Is4() {
		sa4.Family = unix.AF_INET
		sa4.Port = networkPort(addr.Port())
		sa4.Addr = a.As4()
		p, size = unsafe.Pointer(&sa4), unsafe.Sizeof(sa4)
	} else {
		sa6.Family = unix.AF_INET6
		sa6.Port = networkPort(addr.Port())
		sa6.Addr = a.As16()
		p, size = unsafe.Pointer(&sa6), unsafe.Sizeof(sa6)
	}
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(p), size)
	return e
}

// accept4 accepts a connection, non-blocking, and returns the peer's
// address with it (unix.Accept4 also asks the listening socket for its
// protocol on every call): an IPv4 peer of an IPv6 socket as IPv4, and a
// link-local IPv6 peer with its zone, as Go's net package gives them.
func accept4(lfd int) (int, netip.AddrPort, syscall.Errno) {
	var rsa unix.RawSockaddrAny
	n := uint32(unix.SizeofSockaddrAny)
	fd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(lfd), uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&n)),
		unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, e
	}
	var peer netip.AddrPort
	switch rsa.Addr.Family {
	case unix.AF_INET:
		sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		peer = netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), networkPort(sa.Port))
	case unix.AF_INET6:
		sa := (*unix.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		a := netip.AddrFrom16(sa.Addr).Unmap()
		if sa.Scope_id != 0 && a.Is6() {
			a = a.WithZone(zoneName(sa.Scope_id))
		}
		peer = netip.AddrPortFrom(a, networkPort(sa.Port))
	}
	return int(fd), peer, 0
}

// zones are the names of the interfaces that link-local peers came in
// on, by index, each looked up again after a minute, as Go's net package
// keeps them.
var zones struct {
	sync.Mutex
	byIndex map[uint32]zone
}

type zone struct {
	name string
	at   time.Time
}

// zoneName is the zone of a link-local peer that came in on the
// interface with index i: the interface's name, or i when it has none.
// Unlike the calls above, a lookup asks the kernel for its interfaces;
// it happens once a minute at most per interface.
func zoneName(i uint32) string {
	now := time.Now()
	zones.Lock()
	z, ok := zones.byIndex[i]
	zones.Unlock()
	if ok && now.Sub(z.at) < time.Minute {
		return z.name
	}
	z = zone{name: strconv.FormatUint(uint64(i), 10), at: now}
	if ifi, err := net.InterfaceByIndex(int(i)); err == nil {
		z.name = ifi.Name
	}
	zones.Lock()
	if zones.byIndex == nil {
		zones.byIndex = map[uint32]zone{}
	}
	zones.byIndex[i] = z
	zones.Unlock()
	return z.name
}

// networkPort swaps a port between host and network byte order (the same
// operation both ways).
func networkPort(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// WriteAll writes p to the socket fd until it is written or the socket
// cannot take more now; it returns how much was written.
func WriteAll(fd int, p []byte) (int, error) {
	written := 0
	for written < len(p) {
		n, e := Write(fd, p[written:])
		switch e {
		case 0:
			written += n
		case unix.EINTR:
		case unix.EAGAIN:
			return written, nil
		default:
			return written, e
		}
	}
	return written, nil
}

// Dup duplicates the descriptor of a socket in Go's poller; the
// duplicate is the caller's, and outside Go's poller.
func Dup(c syscall.Conn) (int, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, false
	}
	nfd := -1
	cerr := rc.Control(func(fd uintptr) {
		nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil || err != nil {
		return -1, false
	}
	return nfd, true
}
