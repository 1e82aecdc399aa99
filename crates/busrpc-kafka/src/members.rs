//! Who serves a queue: the members of its consumer group, from the group
//! coordinator (DescribeGroups through librdkafka's group list). A member
//! that leaves cleanly is gone at once; one that dies stays until its
//! session times out (`session.timeout.ms`). A broker that cannot describe
//! groups (librdkafka's mock cluster) cannot tell, and says so once. Tansu
//! 0.6.0 describes a group only once it is empty: there a service being
//! served reads as "cannot tell" (calls go ahead) and a stopped one as
//! served by nobody.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use busrpc_core::transport::{Member, TransportError};
use rdkafka::producer::Producer as _;

use crate::connection::{transport_error, Connection};

/// Whether the broker answered a group description: once it has failed to,
/// this transport stops asking.
#[derive(Debug, Default)]
pub(crate) struct Describes {
    unsupported: AtomicBool,
}

impl Connection {
    /// The members of the consumer group `group_id`; `None` when the broker
    /// cannot describe groups, or knows no such group (the publish says
    /// whether anybody ever served it).
    pub(crate) async fn group_members(
        self: &Arc<Self>,
        group_id: &str,
        describes: &Describes,
    ) -> Result<Option<Vec<Member>>, TransportError> {
        if describes.unsupported.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let inner = self.clone();
        let group = group_id.to_owned();
        let listed = tokio::task::spawn_blocking(move || {
            inner
                .producer
                .client()
                .fetch_group_list(Some(&group), Duration::from_secs(5))
                .map(|list| {
                    list.groups().iter().find(|g| g.name() == group).map(|g| {
                        let members = g.members().iter();
                        let state = g.state().to_owned();
                        let members = members
                            .map(|m| Member::new(m.client_id().to_owned()))
                            .collect::<Vec<_>>();
                        (state, members)
                    })
                })
        })
        .await
        .map_err(|e| TransportError::Other(Box::new(e)))?;
        match listed {
            Ok(Some((state, members))) if state != "Dead" => Ok(Some(members)),
            Ok(_) => Ok(None),
            Err(e) if unsupported(&e) => {
                describes.unsupported.store(true, Ordering::Relaxed);
                tracing::debug!(error = %e, "this broker cannot describe groups; callers of a service with no live server wait for their timeout");
                Ok(None)
            }
            Err(e) => Err(transport_error(e)),
        }
    }
}

/// Whether `e` says that the broker does not describe groups at all.
fn unsupported(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::error::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(Code::UnsupportedVersion | Code::UnsupportedFeature | Code::InvalidRequest)
    )
}
