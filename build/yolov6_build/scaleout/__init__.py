"""Beyond one server: a local Prometheus with the deployment's rules, an HAProxy balancer, the fleet run."""
