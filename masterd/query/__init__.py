"""Ganeti's query machinery for the master: fields, the filter language, Query/QueryFields answers.

Modules (each documents its interface):
    fields   FieldDefinition, FieldSpec, FieldRegistry (tables of the real luxid, fields.json), RS_*
    filter   compile_filter (the JSON filter language), requested_names
    engine   Resource, run_query, query_fields, classic_rows, resource_definitions, response checks
    jobs     the `job` resource: getters over job files, query_jobs, query_jobs_classic,
             job_field_values, job_status, job_priority, op_summary
    instances the `instance` resource over config.data, live fields from all_instances_info:
             instance_resource, query_instances, classic_instances (QueryInstances)
    qlang    the text language of gnt-* list commands: parse_filter, make_filter
    errors   FilterError, QueryFilterParseError, OpPrereqError, GenericError with `encode()`

Typical use by the LUXI/gRPC handlers:

    resource = job_resource()                       # once
    query_jobs(source, fields, qfilter, resource)   # Query("job", fields, qfilter)
    query_fields(resource.definitions, names)       # QueryFields("job", names)
    query_jobs_classic(source, ids, fields)         # QueryJobs(ids, fields)
"""
