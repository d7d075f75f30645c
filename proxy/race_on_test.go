//go:build race

package proxy

// raceDetector: the tests run under the race detector, which slows every
// goroutine several times over; timing ratios mean nothing then.
const raceDetector = true
