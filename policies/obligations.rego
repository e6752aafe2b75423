# METADATA
# title: Obligations
# description: >-
#   What the gateway must do with an allowed request: seal the prompt to the auditors' key
#   (capture_prompt) and redact labelled spans before external egress (redact).
package gateway.routing

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
