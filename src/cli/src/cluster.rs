//! `sluice cluster …`: `info` (brokers, controller, cluster id, from Metadata) and
//! `config get|set` (cluster-wide broker configs, through DescribeConfigs and
//! IncrementalAlterConfigs on the broker resource).

use serde_json::json;
use sluice_codec::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use sluice_codec::kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use sluice_codec::kafka_protocol::messages::{
    DescribeConfigsRequest, IncrementalAlterConfigsRequest,
};
use sluice_codec::kafka_protocol::protocol::StrBytes;

use crate::client::Client;
use crate::output::{json, table};
use crate::{kafka_error, CliError, Format, Global};

/// DescribeConfigs/IncrementalAlterConfigs resource type of a broker.
const BROKER_RESOURCE: i8 = 4;

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// The brokers (ids and addresses), the controller and the cluster id.
    Info,
    /// Cluster-wide broker configs.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(clap::Subcommand, Debug)]
pub enum ConfigCommand {
    /// A config's value in effect (as the controller, or else the first broker, reports it).
    Get {
        #[arg(value_name = "KEY")]
        key: String,
    },
    /// Set a config for every broker (Kafka's cluster-wide dynamic default).
    Set {
        #[arg(value_name = "KEY")]
        key: String,
        #[arg(value_name = "VALUE")]
        value: String,
    },
}

pub fn run(global: &Global, command: ClusterCommand) -> Result<String, CliError> {
    let format = global.output()?;
    let mut client = global.connect()?;
    match command {
        ClusterCommand::Info => info(&mut client, format),
        ClusterCommand::Config(ConfigCommand::Get { key }) => get(&mut client, format, &key),
        ClusterCommand::Config(ConfigCommand::Set { key, value }) => {
            set(&mut client, format, &key, &value)
        }
    }
}

fn info(client: &mut Client, format: Format) -> Result<String, CliError> {
    let meta = client.metadata(Some(&[]))?;
    let mut brokers: Vec<_> = meta.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id.0);
    let cluster_id = meta.cluster_id.as_ref().map(|c| c.to_string());
    let controller = meta.controller_id.0;
    Ok(match format {
        Format::Json => json(&json!({
            "cluster_id": cluster_id,
            "controller": controller,
            "brokers": brokers.iter().map(|b| json!({
                "id": b.node_id.0,
                "host": b.host.to_string(),
                "port": b.port,
                "rack": b.rack.as_ref().map(|r| r.to_string()),
            })).collect::<Vec<_>>(),
        })),
        Format::Text => {
            let mut out = table(
                &["CLUSTER-ID", "CONTROLLER"],
                &[vec![
                    cluster_id.unwrap_or_else(|| "(none)".into()),
                    controller.to_string(),
                ]],
            );
            out.push('\n');
            out.push_str(&table(
                &["ID", "HOST", "PORT", "RACK"],
                &brokers
                    .iter()
                    .map(|b| {
                        let id = if b.node_id.0 == controller {
                            format!("{}*", b.node_id.0)
                        } else {
                            b.node_id.0.to_string()
                        };
                        vec![
                            id,
                            b.host.to_string(),
                            b.port.to_string(),
                            b.rack.as_ref().map_or(String::new(), |r| r.to_string()),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ));
            out
        }
    })
}

fn get(client: &mut Client, format: Format, key: &str) -> Result<String, CliError> {
    let meta = client.metadata(Some(&[]))?;
    let broker = if meta.brokers.iter().any(|b| b.node_id == meta.controller_id) {
        meta.controller_id.0
    } else {
        meta.brokers
            .iter()
            .map(|b| b.node_id.0)
            .min()
            .ok_or_else(|| CliError("the cluster's metadata lists no broker".into()))?
    };
    let resp = client.call_node(
        broker,
        &DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(BROKER_RESOURCE)
            .with_resource_name(StrBytes::from_string(broker.to_string()))
            .with_configuration_keys(Some(vec![StrBytes::from_string(key.to_string())]))]),
    )?;
    let result = resp
        .results
        .first()
        .ok_or_else(|| CliError("DescribeConfigs answered nothing".into()))?;
    if result.error_code != 0 {
        return Err(kafka_error(
            &format!("broker {broker} configs"),
            result.error_code,
            result.error_message.as_ref().map(|m| m.as_str()),
        ));
    }
    let c = result
        .configs
        .iter()
        .find(|c| c.name.as_str() == key)
        .ok_or_else(|| CliError(format!("{key}: no such broker config")))?;
    let value = c.value.as_ref().map(|v| v.to_string());
    Ok(match format {
        Format::Json => json(&json!({ key: value })),
        Format::Text => format!("{}\n", value.unwrap_or_else(|| "(null)".into())),
    })
}

fn set(client: &mut Client, format: Format, key: &str, value: &str) -> Result<String, CliError> {
    let resp = client.call(
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(BROKER_RESOURCE)
                // The empty name: the default of every broker.
                .with_resource_name(StrBytes::from_static_str(""))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_string(key.to_string()))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(value.to_string())))]),
        ]),
    )?;
    let r = resp
        .responses
        .first()
        .ok_or_else(|| CliError("IncrementalAlterConfigs answered nothing".into()))?;
    if r.error_code != 0 {
        return Err(kafka_error(
            &format!("{key}={value}"),
            r.error_code,
            r.error_message.as_ref().map(|m| m.as_str()),
        ));
    }
    Ok(match format {
        Format::Json => json(&json!({ key: value })),
        Format::Text => format!("{key}={value}: OK\n"),
    })
}
