//! The channel lease's scripts (`src/cluster/lease_*.lua`) and the commit script's fence, run on
//! a real Redis under any interleaving of takes, renewals, releases, node deaths, expiries and
//! fenced writes by three nodes: one owner per channel at any time, epochs that only grow, and
//! a write accepted only under the lease Redis holds now.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use proptest::prelude::*;
use serde_json::json;

use crate::helpers::{SHARED_REDIS_PORT, ensure_shared_redis, unique_prefix};

const TAKE: &str = include_str!("../../src/cluster/lease_take.lua");
const RENEW: &str = include_str!("../../src/cluster/lease_renew.lua");
const RELEASE: &str = include_str!("../../src/cluster/lease_release.lua");
const COMMIT: &str = include_str!("../../src/cluster/commit.lua");

const NODES: usize = 3;
const TTL_MS: &str = "60000";

/// A reply, as far as these scripts answer.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Nil,
    Int(i64),
    Text(String),
    List(Vec<Reply>),
}

/// The smallest RESP2 client: one command, one reply, on one connection.
struct Redis {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Redis {
    fn connect() -> Redis {
        let stream = TcpStream::connect(("127.0.0.1", SHARED_REDIS_PORT)).expect("Redis answers");
        let reader = BufReader::new(stream.try_clone().expect("a second handle"));
        Redis {
            writer: stream,
            reader,
        }
    }

    fn call(&mut self, args: &[&str]) -> Reply {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.writer.write_all(out.as_bytes()).expect("sent");
        self.read()
    }

    fn read(&mut self) -> Reply {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a reply");
        let line = line.trim_end();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Reply::Text(rest.to_owned()),
            "-" => panic!("Redis error: {rest}"),
            ":" => Reply::Int(rest.parse().expect("an integer")),
            "$" => {
                let n: i64 = rest.parse().expect("a length");
                if n < 0 {
                    return Reply::Nil;
                }
                let mut buf = vec![0u8; n as usize + 2];
                std::io::Read::read_exact(&mut self.reader, &mut buf).expect("the bulk string");
                buf.truncate(n as usize);
                Reply::Text(String::from_utf8(buf).expect("UTF-8"))
            }
            "*" => {
                let n: i64 = rest.parse().expect("a count");
                if n < 0 {
                    return Reply::Nil;
                }
                Reply::List((0..n).map(|_| self.read()).collect())
            }
            other => panic!("unexpected reply type {other:?}"),
        }
    }

    fn eval(&mut self, script: &str, keys: &[&str], args: &[&str]) -> Reply {
        let numkeys = keys.len().to_string();
        let mut all = vec!["EVAL", script, &numkeys];
        all.extend_from_slice(keys);
        all.extend_from_slice(args);
        self.call(&all)
    }

    fn get(&mut self, key: &str) -> Option<String> {
        match self.call(&["GET", key]) {
            Reply::Text(t) => Some(t),
            _ => None,
        }
    }
}

/// What one node does next.
#[derive(Debug, Clone)]
enum Step {
    /// It needs the channel's owner (an operation arrived): the take script.
    Take(usize),
    /// Its heartbeat: renews the lease it believes it holds.
    Renew(usize),
    /// Its sign-off: releases it.
    Release(usize),
    /// It writes the channel under the lease it believes it holds (the commit script).
    Write(usize),
    /// Its heartbeat key runs out (it died, or is paused: its beliefs stay).
    Die(usize),
    /// It beats again (a paused node resumes).
    Revive(usize),
    /// The lease's time-to-live runs out.
    Expire,
}

fn step() -> impl Strategy<Value = Step> {
    let node = 0..NODES;
    prop_oneof![
        4 => node.clone().prop_map(Step::Take),
        2 => node.clone().prop_map(Step::Renew),
        1 => node.clone().prop_map(Step::Release),
        4 => node.clone().prop_map(Step::Write),
        1 => node.clone().prop_map(Step::Die),
        1 => node.prop_map(Step::Revive),
        1 => Just(Step::Expire),
    ]
}

fn epoch_of(token: &str) -> u64 {
    token
        .split_once(' ')
        .and_then(|(_, e)| e.parse().ok())
        .expect("a token is \"<node> <epoch>\"")
}

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut redis = Redis::connect();
    let prefix = unique_prefix();
    let lease = format!("{prefix}:owner:c");
    let channel = format!("{prefix}:ch:c");
    let counter = format!("{prefix}:writes");
    let heartbeat_prefix = format!("{prefix}:node:");
    let names: Vec<String> = (0..NODES).map(|n| format!("node{n}")).collect();
    redis.call(&["HSET", &channel, "v", "1", "d", "{}"]);
    for name in &names {
        redis.call(&["SET", &format!("{heartbeat_prefix}{name}"), "2"]);
    }
    let mut alive = [true; NODES];
    // The token each node believes it holds (a paused node keeps believing).
    let mut believed: Vec<Option<String>> = vec![None; NODES];
    let mut highest_epoch = 0u64;
    let mut accepted = 0i64;
    for step in steps {
        match *step {
            Step::Take(n) => {
                let before = redis.get(&lease);
                let answer = redis.eval(
                    TAKE,
                    &[&lease, &channel],
                    &[&names[n], TTL_MS, &heartbeat_prefix],
                );
                let holder_of = |token: &str| {
                    let name = token.split_once(' ').map(|(h, _)| h).unwrap_or("");
                    names.iter().position(|n| n == name)
                };
                if !alive[n] {
                    // A node whose own heartbeat is gone takes nothing and keeps nothing: it
                    // hears a live holder's token, or nothing.
                    let live_other = before
                        .as_deref()
                        .and_then(holder_of)
                        .filter(|&h| h != n && alive[h]);
                    match live_other {
                        Some(_) => prop_assert_eq!(
                            &answer,
                            &Reply::Text(before.clone().unwrap_or_default())
                        ),
                        None => prop_assert_eq!(&answer, &Reply::Nil),
                    }
                    if before.as_deref().and_then(holder_of) == Some(n) {
                        prop_assert_eq!(redis.get(&lease), None, "its own lease is dropped");
                    }
                    continue;
                }
                let token = match answer {
                    Reply::Text(t) => t,
                    other => return Err(TestCaseError::fail(format!("take: {other:?}"))),
                };
                let holder = token.split_once(' ').map(|(h, _)| h.to_owned());
                let holder_index = names.iter().position(|name| Some(name) == holder.as_ref());
                let Some(h) = holder_index else {
                    return Err(TestCaseError::fail(format!("unknown holder in {token:?}")));
                };
                if before.as_deref() == Some(token.as_str()) {
                    prop_assert!(
                        h == n || alive[h],
                        "a dead holder's lease was kept: {token}"
                    );
                } else {
                    // A new lease: the taker's, with a higher epoch than any before it.
                    prop_assert_eq!(h, n, "a take gave the lease to another node");
                    prop_assert!(epoch_of(&token) > highest_epoch, "epoch went back: {token}");
                    highest_epoch = epoch_of(&token);
                    if let Some(old) = &before {
                        let old_holder = old.split_once(' ').map(|(h, _)| h).unwrap_or("");
                        let i = names.iter().position(|name| name == old_holder);
                        prop_assert!(
                            i.is_none_or(|i| !alive[i] || i == n),
                            "taken from a live holder: {old} -> {token}"
                        );
                    }
                }
                if h == n {
                    believed[n] = Some(token);
                }
            }
            Step::Renew(n) => {
                let Some(token) = believed[n].clone() else {
                    continue;
                };
                let current = redis.get(&lease);
                let kept = redis.eval(RENEW, &[&lease, &channel], &["60000", &token]);
                let kept = kept == Reply::List(vec![Reply::Int(1)]);
                prop_assert_eq!(kept, current.as_deref() == Some(token.as_str()));
                if !kept {
                    believed[n] = None;
                }
            }
            Step::Release(n) => {
                let Some(token) = believed[n].take() else {
                    continue;
                };
                let current = redis.get(&lease);
                redis.eval(RELEASE, &[&lease], &[&token]);
                let after = redis.get(&lease);
                if current.as_deref() == Some(token.as_str()) {
                    prop_assert_eq!(after, None, "its own lease is released");
                } else {
                    prop_assert_eq!(after, current, "another's lease is left alone");
                }
            }
            Step::Write(n) => {
                let Some(token) = believed[n].clone() else {
                    continue;
                };
                let current = redis.get(&lease);
                let spec = json!({
                    "checks": [],
                    "writes": [{"op": "incr", "k": 2, "n": 1}],
                    "lease": {"k": 1, "t": token},
                    "feed": format!("{prefix}:feed"),
                });
                let answer = redis.eval(COMMIT, &[&lease, &counter], &[&spec.to_string()]);
                let stored = matches!(&answer, Reply::List(l) if l.first() == Some(&Reply::Int(1)));
                let refused = answer == Reply::List(vec![Reply::Int(-4)]);
                prop_assert!(stored || refused, "commit answered {answer:?}");
                // Accepted exactly when the lease holds this node's token now: never two
                // owners' writes, whatever each believes.
                prop_assert_eq!(stored, current.as_deref() == Some(token.as_str()));
                if stored {
                    accepted += 1;
                }
            }
            Step::Die(n) => {
                alive[n] = false;
                redis.call(&["DEL", &format!("{heartbeat_prefix}{}", names[n])]);
            }
            Step::Revive(n) => {
                alive[n] = true;
                redis.call(&["SET", &format!("{heartbeat_prefix}{}", names[n]), "2"]);
            }
            Step::Expire => {
                redis.call(&["DEL", &lease]);
            }
        }
        // One owner at most: the nodes whose belief Redis confirms.
        let current = redis.get(&lease);
        let owners = believed
            .iter()
            .filter(|b| b.is_some() && b.as_deref() == current.as_deref())
            .count();
        prop_assert!(owners <= 1, "{owners} owners of {current:?}");
    }
    let writes = match redis.call(&["GET", &counter]) {
        Reply::Text(t) => t.parse::<i64>().unwrap_or(0),
        _ => 0,
    };
    prop_assert_eq!(writes, accepted, "exactly the accepted writes were made");
    // The channel goes: its holder's next renewal releases the lease (the holder always
    // believes it holds it), and nobody can take it again.
    redis.call(&["DEL", &channel]);
    for token in believed.iter().flatten() {
        let kept = redis.eval(RENEW, &[&lease, &channel], &["60000", token]);
        prop_assert_eq!(kept, Reply::List(vec![Reply::Int(0)]));
    }
    prop_assert_eq!(
        redis.get(&lease),
        None,
        "no lease for a channel that is gone"
    );
    let dead = [Step::Die(0), Step::Die(1), Step::Die(2)];
    for s in &dead {
        if let Step::Die(n) = s {
            redis.call(&["DEL", &format!("{heartbeat_prefix}{}", names[*n])]);
        }
    }
    let after = redis.eval(
        TAKE,
        &[&lease, &channel],
        &["node0", TTL_MS, &heartbeat_prefix],
    );
    prop_assert_eq!(
        after,
        Reply::Nil,
        "nobody takes a lease on a channel that is gone"
    );
    let mut keys = vec![lease.clone(), counter, channel];
    keys.extend(names.iter().map(|n| format!("{heartbeat_prefix}{n}")));
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    redis.call(&del);
    Ok(())
}

#[test]
fn one_owner_per_channel_under_any_interleaving() {
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(ensure_shared_redis());
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(steps in proptest::collection::vec(step(), 1..60))| {
        run(&steps)?;
    });
}

#[test]
fn a_live_holder_keeps_its_lease_and_a_dead_ones_goes_with_a_higher_epoch() {
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(ensure_shared_redis());
    run(&[
        Step::Take(0),
        Step::Take(1),
        Step::Write(0),
        Step::Die(0),
        Step::Take(1),
        Step::Write(0),
        Step::Write(1),
        Step::Renew(0),
        Step::Release(1),
        Step::Take(2),
    ])
    .expect("the scripted interleaving holds");
}
