// Package controllers turns the cluster's WsRoutes and Pods into the
// gateway's routing table and the routes' status.
//
// Two pieces share one controller-runtime cache:
//
//   - TableBuilder runs on every replica. It rebuilds the routing table from
//     the cache (batching bursts of events) and publishes it atomically to
//     the data plane. It never writes to the API server.
//   - RouteReconciler runs on the elected leader only. It writes each
//     route's status (conditions, endpoints, observedGeneration) and Events
//     from the latest build, only when they changed.
package controllers
