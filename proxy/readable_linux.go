package proxy

import "syscall"

// readable is a syscall.RawConn.Read callback that returns true once the
// socket has something to report (data, end of stream or an error),
// without consuming it; false makes the runtime poller wait for it.
var readable = func(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return err != syscall.EAGAIN
}
