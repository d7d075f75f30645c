//go:build unix

package proxy

import "syscall"

// rawReads: a tunnel on goroutines reads plain TCP through
// syscall.RawConn, borrowing a buffer only once bytes are there.
const rawReads = true

// rawRead is a syscall.RawConn.Read callback: it reads what the socket
// holds into a borrowed buffer, or gives the buffer back and returns false
// (the runtime poller then waits for readability) when there is nothing.
func (d *reader) rawRead(fd uintptr) bool {
	bp := bufPool.Get().(*[]byte)
	for {
		n, err := syscall.Read(int(fd), *bp)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			bufPool.Put(bp)
			return false
		}
		if n < 0 {
			n = 0
		}
		d.rbuf, d.rn, d.rerr = bp, n, err
		return true
	}
}
