# METADATA
# title: Availability
# description: >-
#   Deployments the gateway reports unhealthy (circuit breaker open, failed health checks,
#   credentials not configured) are not eligible; a missing flag counts as unhealthy.
package gateway.routing

# METADATA
# title: Deployment unhealthy
# custom:
#   short_name: unhealthy
#   message: "deployment is unhealthy (circuit breaker open after repeated failures) or not configured (its API key is not set)"
exclusion contains {"deployment": d.id, "rule": "unhealthy", "message": "deployment is unhealthy (circuit breaker open after repeated failures) or not configured (its API key is not set)"} if {
	some d in input.deployments
	not d.healthy == true
}
