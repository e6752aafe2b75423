# METADATA
# title: Capability and context window
# description: >-
#   The request's needs (tools, json, vision... derived from the request) must be a subset of
#   the deployment's capabilities, and its context window must hold the estimated input plus
#   the maximum output tokens.
package gateway.routing

# METADATA
# title: Missing capability
# custom:
#   short_name: missing_capability
#   message: "deployment lacks the required capability <need>"
exclusion contains {"deployment": d.id, "rule": "missing_capability", "message": msg} if {
	some d in input.deployments
	some need in input.request.needs
	not need in d.capabilities
	msg := sprintf("deployment lacks the required capability %s", [need])
}

# The request (estimated input + max output tokens) fits the deployment's context window.
fits_context(d) if {
	d.context_window >= input.request.est_input_tokens + input.request.max_output_tokens
}

context_message(d) := sprintf("context window of %v tokens is smaller than the request's estimated %v tokens", [d.context_window, total]) if {
	total := input.request.est_input_tokens + input.request.max_output_tokens
	is_number(d.context_window)
} else := "the request's token estimate is missing or out of range, so it cannot be checked against the context window"

# METADATA
# title: Context window too small
# custom:
#   short_name: context_window
#   message: "context window of <n> tokens is smaller than the request's estimated <m> tokens"
exclusion contains {"deployment": d.id, "rule": "context_window", "message": context_message(d)} if {
	some d in input.deployments
	not fits_context(d)
}
