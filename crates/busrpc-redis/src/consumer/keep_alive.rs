//! Keeping the entries a live consumer holds from being claimed, and the
//! consumer itself from being taken for dead; leaving the group cleanly.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::sync::oneshot;

use super::forget::alive_key;
use super::members::{vouch_ahead, vouched_until};
use crate::config::RedisConfig;
use crate::connection::{millis, Connection};
use crate::settle::{release_cmd, InHand};

/// Keeps the entries a live consumer holds from being claimed: every
/// `claim_idle / 3`, `XCLAIM … 0 <ids> JUSTID` to itself resets their idle
/// time (JUSTID leaves their delivery counts alone). A handler slower than
/// `claim_idle`, or a request waiting in the buffer for a handler slot,
/// is then never taken and run again by another server, nor dead-lettered
/// while it runs; only a consumer that stopped (its process dead, so this
/// task too) leaves entries to claim. Each period, and once at the start,
/// it also renews the consumer's alive key (see [`super::members`] and
/// [`super::forget`]); the period is a third of `dead_consumer_idle` if
/// that is shorter.
/// Ends when the consumer is dropped.
pub(super) async fn keep_alive(
    connection: Arc<Connection>,
    [address, group, consumer]: [Arc<str>; 3],
    in_hand: Arc<InHand>,
    mut stopped: oneshot::Receiver<()>,
) {
    let alive = alive_key(&address, &consumer);
    let period = period(&connection.config);
    let mut failed = false;
    // The first tick is at once: the alive key is set as the consumer joins.
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = ticks.tick() => {}
        }
        let ids = in_hand.ids();
        let mut pipe = redis::pipe();
        vouch(&mut pipe, &alive, &connection.config);
        if !ids.is_empty() {
            let cmd = pipe.cmd("XCLAIM");
            cmd.arg(&*address).arg(&*group).arg(&*consumer).arg(0);
            for id in &ids {
                cmd.arg(id);
            }
            cmd.arg("JUSTID").ignore();
        }
        match pipe.query_async::<()>(&mut connection.commands()).await {
            Ok(()) => failed = false,
            // Once per outage, not every period.
            Err(e) if !failed => {
                failed = true;
                tracing::warn!(%address, in_hand = ids.len(), error = %e, "keeping requests in hand failed; past claim_idle another server may take them");
            }
            Err(_) => {}
        }
    }
}

/// How often a consumer keeps what it holds and its alive key: a third of
/// `claim_idle`, or of `dead_consumer_idle` if that is shorter.
pub(super) fn period(config: &RedisConfig) -> Duration {
    let mut period = config.claim_idle / 3;
    if !config.dead_consumer_idle.is_zero() {
        period = period.min(config.dead_consumer_idle / 3);
    }
    period.max(Duration::from_millis(10))
}

/// Adds to `pipe` the renewal of a consumer's alive key: it vouches for
/// three periods ahead (see [`super::members`]), and lives for
/// `dead_consumer_idle` (see [`super::forget`]), never less than that.
pub(super) fn vouch(pipe: &mut redis::Pipeline, key: &str, config: &RedisConfig) {
    let ahead = vouch_ahead(period(config));
    let lives = config.dead_consumer_idle.max(ahead);
    pipe.cmd("SET")
        .arg(key)
        .arg(vouched_until(ahead))
        .arg("PX")
        .arg(millis(lives))
        .ignore();
}

/// A clean close of a consumer: makes what it still held claimable at once
/// and, if nothing is left pending with it, removes it from the group, so
/// that restarts do not pile up consumers (`XGROUP DELCONSUMER` drops a
/// consumer's pending entries, hence only when it has none; the check and
/// the removal are one script). Its alive key goes first: if it stays in
/// the group, live servers remove it once they have claimed what it held.
pub(super) async fn leave(
    connection: Arc<Connection>,
    [address, group, consumer]: [Arc<str>; 3],
    left_in_hand: oneshot::Receiver<Vec<String>>,
) {
    let ids = left_in_hand.await.unwrap_or_default();
    // Callers are told at once that this server is gone.
    let mut cmd = redis::cmd("DEL");
    cmd.arg(alive_key(&address, &consumer));
    if let Err(e) = connection.query(&cmd).await {
        tracing::debug!(%address, %consumer, error = %e, "deleting the alive key failed; it expires");
    }
    if !ids.is_empty() {
        let cmd = release_cmd(&connection, &address, &group, &consumer, &ids);
        if let Err(e) = connection.query(&cmd).await {
            tracing::warn!(%address, error = %e, "handing back requests in hand failed; they will be claimed after claim_idle");
        }
        return;
    }
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(LEAVE_SCRIPT)
        .arg(1)
        .arg(&*address)
        .arg(&*group)
        .arg(&*consumer);
    match connection.query(&cmd).await {
        Ok(Value::Int(0..)) => tracing::debug!(%address, %consumer, "left the group"),
        Ok(_) => {
            tracing::debug!(%address, %consumer, "requests still pending; staying in the group until claimed")
        }
        Err(e) => tracing::warn!(%address, %consumer, error = %e, "leaving the group failed"),
    }
}

/// `EVAL`'d with the stream as its key and the group and consumer as
/// arguments: deletes the consumer if nothing is pending with it.
const LEAVE_SCRIPT: &str = include_str!("../scripts/leave.lua");
