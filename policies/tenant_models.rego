# METADATA
# title: Tenant model allow-list
# description: >-
#   A tenant may list the deployments it may use (input.tenant.models, deployment ids); when
#   the list is set, every other deployment is excluded. Unset (null) means no restriction.
package gateway.routing

# METADATA
# title: Deployment not on the tenant's allow-list
# custom:
#   short_name: model_not_allowed
#   message: "deployment <id> is not on tenant <tenant>'s model allow-list"
exclusion contains {"deployment": d.id, "rule": "model_not_allowed", "message": msg} if {
	some d in input.deployments
	is_array(input.tenant.models)
	not d.id in input.tenant.models
	msg := sprintf("deployment %s is not on tenant %s's model allow-list", [d.id, input.principal.tenant])
}
