"""The long-running ollafleet: watch the file, keep the network converged, serve the balancer."""
