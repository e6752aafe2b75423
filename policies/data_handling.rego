# METADATA
# title: Data handling
# description: >-
#   Providers that train on or retain submitted data are excluded from the data level named in
#   policy data (data.data_handling.no_training_from / no_retention_from) upwards; a provider
#   that retains nothing offers zero data retention. Missing policy data or a missing flag on
#   the deployment excludes it (fail closed).
package gateway.routing

training_allowed if level_rank[input.data.level] < level_rank[data.data_handling.no_training_from]

retention_allowed if level_rank[input.data.level] < level_rank[data.data_handling.no_retention_from]

# METADATA
# title: Provider trains on data
# custom:
#   short_name: trains_on_data
#   message: "deployment trains on submitted data, which is not allowed for <level> data"
exclusion contains {"deployment": d.id, "rule": "trains_on_data", "message": msg} if {
	some d in input.deployments
	not d.trains_on_data == false
	not training_allowed
	msg := sprintf("deployment trains on submitted data, which is not allowed for %s data", [input.data.level])
}

# METADATA
# title: Provider retains data (no zero data retention)
# custom:
#   short_name: retains_data
#   message: "deployment retains submitted data, which is not allowed for <level> data"
exclusion contains {"deployment": d.id, "rule": "retains_data", "message": msg} if {
	some d in input.deployments
	not d.retains_data == false
	not retention_allowed
	msg := sprintf("deployment retains submitted data, which is not allowed for %s data", [input.data.level])
}
