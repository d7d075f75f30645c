// Package controllers turns the cluster's WsRoutes and Pods into the
// gateway's routing table and the routes' status.
//
// Two pieces share one controller-runtime cache:
//
//   - TableBuilder runs on every replica. It rebuilds the routing table from
//     the cache (batching bursts of events) and publishes it atomically to
//     the data plane. It never writes to the API server. It also reads the
//     key Secrets (labelled wsgate.io/jwks=true) from a cache of their own
//     (NewKeySecretCache), and the keys of token issuers and of the
//     cluster's ServiceAccount issuer from an auth.Keyring.
//   - RouteReconciler writes each route's status (conditions, endpoints,
//     observedGeneration), Events and Certificate from the latest build,
//     only when they changed, and only while this replica leads.
//
// LeaderElection campaigns for the leader Lease on every replica. Losing
// it stops the RouteReconciler's writes, nothing else; the replica then
// campaigns again, and on winning reconciles every route.
package controllers
