# METADATA
# title: Sovereign Gateway routing policy
# description: >-
#   Decides which deployments may receive a request, by data residency (level x locality x
#   jurisdiction), data handling (retention, training), capability and context window.
#   Entrypoint data.gateway.routing.decision is always an object; anything else means deny.
#   Every exclusion is written so that a missing or undefined value (an absent attribute, an
#   arithmetic overflow) excludes the deployment rather than silently letting it through.
package gateway.routing

level_rank := {"public": 0, "internal": 1, "confidential": 2, "restricted": 3}

# The residency rule the tenant set for this request's data level (undefined if none).
rule := input.tenant.allowed[input.data.level]

# METADATA
# title: No residency rule for the data level
# custom:
#   short_name: no_rule_for_level
exclusion contains [d.id, msg] if {
	some d in input.deployments
	not input.tenant.allowed[input.data.level]
	msg := sprintf("tenant %s has no residency rule for %s data, so nothing may receive it", [input.principal.tenant, input.data.level])
}

# METADATA
# title: Residency rule allows nothing
# description: A rule that is not `any` and lists neither localities nor jurisdictions.
# custom:
#   short_name: empty_rule_for_level
exclusion contains [d.id, msg] if {
	some d in input.deployments
	rule # defined: the tenant has a rule for this level (the no-rule case is handled above)
	not rule.any
	not rule.locality
	not rule.jurisdictions
	msg := sprintf("the residency rule for %s data lists no allowed locality or jurisdiction", [input.data.level])
}

# METADATA
# title: Locality not allowed for the data level
# custom:
#   short_name: locality_not_allowed
exclusion contains [d.id, msg] if {
	some d in input.deployments
	not rule.any
	rule.locality
	not d.locality in rule.locality
	msg := locality_message(d)
}

# METADATA
# title: Jurisdiction not allowed for the data level
# custom:
#   short_name: jurisdiction_not_allowed
exclusion contains [d.id, msg] if {
	some d in input.deployments
	not rule.any
	rule.jurisdictions
	not d.jurisdiction in rule.jurisdictions
	msg := jurisdiction_message(d)
}

# METADATA
# title: Unknown data level
# custom:
#   short_name: unknown_level
exclusion contains [d.id, msg] if {
	some d in input.deployments
	not level_rank[input.data.level]
	msg := "the request's data level is unknown, so nothing may receive it"
}

# rego-cpp quirk: a string computed inside the policy (a literal, concat, object.get) passed to
# sprintf's %s comes back wrapped in quotes, so messages only format input values and use %v
# for arrays; a missing value gets its own sentence instead of a default string.
locality_message(d) := sprintf("locality %s is not allowed for %s data (allowed: %v)", [d.locality, input.data.level, rule.locality]) if {
	is_string(d.locality)
} else := sprintf("deployment declares no locality, which is not allowed for %s data (allowed: %v)", [input.data.level, rule.locality])

jurisdiction_message(d) := sprintf("jurisdiction %s is not allowed for %s data (allowed: %v)", [d.jurisdiction, input.data.level, rule.jurisdictions]) if {
	is_string(d.jurisdiction)
} else := sprintf("deployment declares no jurisdiction, which is not allowed for %s data (allowed: %v)", [input.data.level, rule.jurisdictions])

# METADATA
# title: Provider trains on data
# custom:
#   short_name: trains_on_data
exclusion contains [d.id, msg] if {
	some d in input.deployments
	not d.trains_on_data == false
	level_rank[input.data.level] >= level_rank.internal
	msg := sprintf("deployment trains on submitted data, which is not allowed for %s data", [input.data.level])
}

# METADATA
# title: Provider retains data
# custom:
#   short_name: retains_data
exclusion contains [d.id, msg] if {
	some d in input.deployments
	not d.retains_data == false
	level_rank[input.data.level] >= level_rank.confidential
	msg := sprintf("deployment retains submitted data, which is not allowed for %s data", [input.data.level])
}

# METADATA
# title: Missing capability
# custom:
#   short_name: missing_capability
exclusion contains [d.id, msg] if {
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
exclusion contains [d.id, context_message(d)] if {
	some d in input.deployments
	not fits_context(d)
}

# METADATA
# title: Deployment unhealthy
# custom:
#   short_name: unhealthy
exclusion contains [d.id, "deployment is unhealthy (circuit breaker open after repeated failures) or not configured (its API key is not set)"] if {
	some d in input.deployments
	not d.healthy == true
}

excluded := {id: reasons |
	some [id, _] in exclusion
	reasons := sort([msg | some [id2, msg] in exclusion; id2 == id])
}

# Eligible deployments, in the order the gateway listed them.
eligible := [d.id | some d in input.deployments; not excluded[d.id]]

reasons := ["no deployment is eligible for this request"] if {
	count(eligible) == 0
} else := [sprintf("%d of %d deployments eligible for %s data", [count(eligible), count(input.deployments), input.data.level])]

# METADATA
# title: Encrypted prompt capture
# description: Tenants that opted in get their prompts sealed to the auditors' key in the record.
capture_obligation := {"capture_prompt": true} if {
	input.tenant.capture_prompts == true
} else := {}

# METADATA
# title: Redaction before external egress
# description: >-
#   Labels the tenant wants redacted before data reaches an external deployment; the gateway
#   replaces their spans with typed placeholders for that deployment only.
redactions[d.id] := labels if {
	some d in input.deployments
	d.locality == "external"
	not excluded[d.id]
	labels := sort({l | some l in input.data.labels; some p in object.get(input.tenant, "redact_external", []); label_matches(l, p)})
	count(labels) > 0
}

label_matches(l, p) if l == p

label_matches(l, p) if startswith(l, sprintf("%s.", [p]))

redact_obligation := {"redact": redactions} if {
	count(redactions) > 0
} else := {}

obligations := object.union(capture_obligation, redact_obligation)

decision := {
	"allow": count(eligible) > 0,
	"eligible": eligible,
	"excluded": excluded,
	"obligations": obligations,
	"reasons": reasons,
}
