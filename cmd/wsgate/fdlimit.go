package main

import "fmt"

// descriptorReserve is what the process needs besides its tunnels: the
// listeners, the API server's watches, the event loops, the metrics and
// probe servers, with room to spare.
const descriptorReserve = 256

// descriptorAdvice says what goes wrong when the process's descriptor
// limit cannot hold maxTunnels tunnels (two descriptors each), or "" when
// it can.
func descriptorAdvice(limit uint64, maxTunnels int) string {
	need := uint64(2*maxTunnels + descriptorReserve)
	if limit >= need {
		return ""
	}
	return fmt.Sprintf("the file descriptor limit (%d) is below what --max-tunnels=%d needs (%d: two per tunnel and %d for the rest): "+
		"past about %d tunnels new clients wait for a descriptor and then get 503; raise the limit or lower --max-tunnels",
		limit, maxTunnels, need, descriptorReserve, (limit-min(limit, descriptorReserve))/2)
}
