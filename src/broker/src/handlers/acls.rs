//! CreateAcls and DeleteAcls (on the controller shard, through the controller) and
//! DescribeAcls (any shard, from this node's adopted ACLs), as `kafka-acls.sh` and the
//! Admin clients use them. Without `--authorizer acl` all three answer SECURITY_DISABLED,
//! as Kafka does without an authorizer; with it, creating and deleting need ALTER on the
//! cluster and describing DESCRIBE (CLUSTER_AUTHORIZATION_FAILED otherwise).

use std::rc::Rc;

use sluice_codec::kafka_protocol::messages::create_acls_response::AclCreationResult;
use sluice_codec::kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use sluice_codec::kafka_protocol::messages::describe_acls_response::{
    AclDescription, DescribeAclsResource,
};
use sluice_codec::kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;
use sluice_meta::acl::{
    AclBinding, AclFilter, AclOperation, AclPermission, PatternType, ResourceType,
};

use super::str_bytes;
use crate::authz;
use crate::conn::Client;
use crate::kerr;
use crate::shard::BrokerShard;

const SECURITY_DISABLED: &str = "No Authorizer is configured.";

/// A filter from the request's fields; `Err` names the field Kafka would refuse (an
/// UNKNOWN or undefined code).
#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    name: &Option<StrBytes>,
    pattern: i8,
    principal: &Option<StrBytes>,
    host: &Option<StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<AclFilter, String> {
    let bad = |what: &str, code: i8| format!("Invalid {what} {code} in the filter");
    Ok(AclFilter {
        resource_type: ResourceType::from_code(resource_type)
            .ok_or_else(|| bad("resourceType", resource_type))?,
        name: name.as_ref().map(|s| s.to_string()),
        pattern: PatternType::from_code(pattern).ok_or_else(|| bad("patternType", pattern))?,
        principal: principal.as_ref().map(|s| s.to_string()),
        host: host.as_ref().map(|s| s.to_string()),
        operation: AclOperation::from_code(operation).ok_or_else(|| bad("operation", operation))?,
        permission: AclPermission::from_code(permission)
            .ok_or_else(|| bad("permissionType", permission))?,
    })
}

pub fn describe(
    shard: &BrokerShard,
    client: &Client,
    r: DescribeAclsRequest,
) -> DescribeAclsResponse {
    let fail = |code: i16, message: &str| {
        DescribeAclsResponse::default()
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message)))
    };
    if !authz::enabled(shard) {
        return fail(kerr::SECURITY_DISABLED, SECURITY_DISABLED);
    }
    if !authz::cluster_allowed(shard, client, AclOperation::Describe) {
        return fail(
            kerr::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        );
    }
    let f = match filter(
        r.resource_type_filter,
        &r.resource_name_filter,
        r.pattern_type_filter,
        &r.principal_filter,
        &r.host_filter,
        r.operation,
        r.permission_type,
    ) {
        Ok(f) => f,
        Err(why) => return fail(kerr::INVALID_REQUEST, &why),
    };
    // Grouped by resource pattern, as Kafka answers (the set is ordered by pattern first).
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    for b in shard
        .shared_handle
        .acls
        .bindings()
        .iter()
        .filter(|b| f.matches(b))
    {
        let same = resources.last().is_some_and(|r| {
            r.resource_type == b.resource_type.code()
                && r.resource_name.as_str() == b.name
                && r.pattern_type == b.pattern.code()
        });
        if !same {
            resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.resource_type.code())
                    .with_resource_name(str_bytes(&b.name))
                    .with_pattern_type(b.pattern.code()),
            );
        }
        let last = resources.last_mut().expect("pushed above");
        last.acls.push(
            AclDescription::default()
                .with_principal(str_bytes(&b.principal))
                .with_host(str_bytes(&b.host))
                .with_operation(b.operation.code())
                .with_permission_type(b.permission.code()),
        );
    }
    DescribeAclsResponse::default()
        .with_error_message(None)
        .with_resources(resources)
}

/// Why the client may not change ACLs (SECURITY_DISABLED or CLUSTER_AUTHORIZATION_FAILED).
fn refused(shard: &BrokerShard, client: &Client) -> Option<(i16, &'static str)> {
    if !authz::enabled(shard) {
        return Some((kerr::SECURITY_DISABLED, SECURITY_DISABLED));
    }
    if !authz::cluster_allowed(shard, client, AclOperation::Alter) {
        return Some((
            kerr::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        ));
    }
    None
}

pub async fn create(
    shard: &Rc<BrokerShard>,
    client: &Client,
    r: CreateAclsRequest,
) -> CreateAclsResponse {
    let result = |o: Result<(), (i16, String)>| match o {
        // Kafka's message is null on success (the codec's default is empty).
        Ok(()) => AclCreationResult::default().with_error_message(None),
        Err((code, message)) => AclCreationResult::default()
            .with_error_code(code)
            .with_error_message(Some(str_bytes(&message))),
    };
    if let Some((code, message)) = refused(shard, client) {
        let results = r
            .creations
            .iter()
            .map(|_| result(Err((code, message.to_string()))))
            .collect();
        return CreateAclsResponse::default().with_results(results);
    }
    // Creations with codes Kafka does not define are refused here; the rest go to the
    // controller, which checks the bindings themselves.
    let mut outcomes: Vec<Option<Result<(), (i16, String)>>> = Vec::new();
    let mut bindings = Vec::new();
    for c in &r.creations {
        let decoded = (|| {
            Some(AclBinding {
                resource_type: ResourceType::from_code(c.resource_type)?,
                name: c.resource_name.to_string(),
                pattern: PatternType::from_code(c.resource_pattern_type)?,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: AclOperation::from_code(c.operation)?,
                permission: AclPermission::from_code(c.permission_type)?,
            })
        })();
        match decoded {
            Some(b) => {
                bindings.push(b);
                outcomes.push(None);
            }
            None => outcomes.push(Some(Err((
                kerr::INVALID_REQUEST,
                "Invalid resource type, pattern type, operation or permission type".to_string(),
            )))),
        }
    }
    let mut answers = match shard.controller.as_ref().and_then(|c| c.cluster()) {
        Some(node) => crate::metadata_sync::create_acls(shard, &node, bindings).await,
        None => {
            let e = (
                kerr::NOT_CONTROLLER,
                "The controller is not available.".to_string(),
            );
            vec![Err(e); bindings.len()]
        }
    }
    .into_iter();
    let results = outcomes
        .into_iter()
        .map(|o| result(o.unwrap_or_else(|| answers.next().expect("one answer per binding"))))
        .collect();
    CreateAclsResponse::default().with_results(results)
}

pub async fn delete(
    shard: &Rc<BrokerShard>,
    client: &Client,
    r: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let failed = |code: i16, message: &str| {
        DeleteAclsFilterResult::default()
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message)))
    };
    if let Some((code, message)) = refused(shard, client) {
        let results = r.filters.iter().map(|_| failed(code, message)).collect();
        return DeleteAclsResponse::default().with_filter_results(results);
    }
    let mut outcomes: Vec<Option<DeleteAclsFilterResult>> = Vec::new();
    let mut filters = Vec::new();
    for f in &r.filters {
        match filter(
            f.resource_type_filter,
            &f.resource_name_filter,
            f.pattern_type_filter,
            &f.principal_filter,
            &f.host_filter,
            f.operation,
            f.permission_type,
        ) {
            Ok(f) => {
                filters.push(f);
                outcomes.push(None);
            }
            Err(why) => outcomes.push(Some(failed(kerr::INVALID_REQUEST, &why))),
        }
    }
    let mut answers = match shard.controller.as_ref().and_then(|c| c.cluster()) {
        Some(node) => crate::metadata_sync::delete_acls(shard, &node, filters).await,
        None => {
            let e = (
                kerr::NOT_CONTROLLER,
                "The controller is not available.".to_string(),
            );
            vec![Err(e); filters.len()]
        }
    }
    .into_iter();
    let matching = |b: AclBinding| {
        DeleteAclsMatchingAcl::default()
            .with_error_message(None)
            .with_resource_type(b.resource_type.code())
            .with_resource_name(str_bytes(&b.name))
            .with_pattern_type(b.pattern.code())
            .with_principal(str_bytes(&b.principal))
            .with_host(str_bytes(&b.host))
            .with_operation(b.operation.code())
            .with_permission_type(b.permission.code())
    };
    let results = outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| match answers.next().expect("one answer per filter") {
                Ok(removed) => DeleteAclsFilterResult::default()
                    .with_error_message(None)
                    .with_matching_acls(removed.into_iter().map(matching).collect()),
                Err((code, message)) => failed(code, &message),
            })
        })
        .collect();
    DeleteAclsResponse::default().with_filter_results(results)
}
