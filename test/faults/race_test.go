//go:build race

package faults

// raceFactor is 1 with the race detector, which makes this process
// (clients, echo pods and the in-process gateway) several times slower:
// some loads are scaled down by it.
const raceFactor = 1
