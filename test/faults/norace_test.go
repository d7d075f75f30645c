//go:build !race

package faults

// raceFactor: see race_test.go.
const raceFactor = 0
