//go:build !race

package proxy

// raceDetector: the tests run under the race detector.
const raceDetector = false
