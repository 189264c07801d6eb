//! The reference model: what a user is entitled to expect from Herald, as plain data, and
//! the generator of operation sequences (proptest-state-machine's `ReferenceStateMachine`).
//!
//! It knows what follows from the requests alone: which webhooks exist, their patterns,
//! whether the user disabled them, their secret versions; which events were published and
//! which webhooks they fan out to; every operation's state, attempts and lease tokens.
//! What depends on timing (a 410 answered by the receiver disabling a webhook, when a
//! retry happens) is tracked by the system-under-test side from what it observes.

mod machine;

pub use machine::*;

use proptest::prelude::*;
use proptest::strategy::Union;
use proptest_state_machine::ReferenceStateMachine;
use std::collections::BTreeMap;

/// Webhook slots: a slot holds one webhook at a time (a deleted one may be replaced).
pub const HOOK_SLOTS: usize = 3;
pub const MAX_OPS: usize = 5;
pub const MAX_EVENTS: usize = 12;
/// The operation type's `max_attempts` in the test config.
pub const OP_MAX_ATTEMPTS: u32 = 2;
/// Every schedule the test uses has this many attempts.
pub const SCHEDULE_LEN: u32 = 3;

pub const EVENT_TYPES: [&str; 4] = [
    "order.created",
    "order.paid",
    "invoice.sent",
    "audit.logged",
];
/// `audit.*` also goes to a broker route (whose broker is down).
pub const ROUTED_PREFIX: &str = "audit.";
pub const KEYS: [&str; 2] = ["k0", "k1"];
pub const PATTERNS: [&[&str]; 6] = [
    &["order.*"],
    &["order.created"],
    &["*"],
    &["transcode.*"],
    &["order.paid", "transcode.succeeded"],
    &["invoice.sent", "transcode.*"],
];
/// `None`: the config's schedule. Every one has [`SCHEDULE_LEN`] attempts.
pub const SCHEDULES: [Option<&[&str]>; 3] = [
    None,
    Some(&["0s", "100ms", "200ms"]),
    Some(&["50ms", "50ms", "50ms"]),
];

pub fn matches(patterns: &[&str], event_type: &str) -> bool {
    patterns.iter().any(|p| {
        *p == "*"
            || *p == event_type
            || p.strip_suffix(".*")
                .is_some_and(|prefix| event_type.starts_with(&format!("{prefix}.")))
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Herald,
    Standard,
}

/// What the receiver does with a webhook's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Healthy,
    Error500,
    Hang,
    Reset,
    Gone,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grace {
    /// `"0s"`: the old secret stops at once.
    Zero,
    OneSecond,
    /// The config's `rotation_grace`.
    Default,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchChange {
    Events(usize),
    /// An index into [`SCHEDULES`] (not 0: a PATCH cannot go back to the config's).
    Schedule(usize),
    Description,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayStatus {
    All,
    Failed,
    Succeeded,
}

/// Which lease token a worker call carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Token {
    /// The last one issued for the operation.
    Latest,
    /// An earlier one (index modulo the earlier ones): always stale.
    Older(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    CreateHook {
        slot: usize,
        patterns: usize,
        schedule: usize,
        format: Format,
    },
    PatchHook {
        slot: usize,
        change: PatchChange,
    },
    /// Six PATCHes of the description, back to back (a user editing while deliveries run).
    PatchBurst {
        slot: usize,
    },
    DisableHook {
        slot: usize,
    },
    EnableHook {
        slot: usize,
    },
    DeleteHook {
        slot: usize,
    },
    RotateSecret {
        slot: usize,
        grace: Grace,
    },
    /// Two `:rotateSecret` at once.
    RotateTwice {
        slot: usize,
    },
    SetBehaviour {
        slot: usize,
        behaviour: Behaviour,
    },
    Publish {
        event_type: usize,
        key: Option<usize>,
    },
    /// `POST /events` again with an earlier event's id: the same body (a retry) or another.
    Republish {
        event: usize,
        same: bool,
    },
    /// `:redeliver` one of the slot's webhook's deliveries (the `pick`-th, modulo).
    Redeliver {
        slot: usize,
        pick: usize,
    },
    Replay {
        slot: usize,
        status: ReplayStatus,
    },
    CreateOp {
        trigger: bool,
        idempotency_key: Option<u8>,
        input: u8,
    },
    CancelOp {
        op: usize,
    },
    DeleteOp {
        op: usize,
    },
    /// A worker claims with a 30 s lease (longer than any case).
    Claim {
        max: u32,
    },
    /// A worker claims with a 1 s lease and dies: the step waits until the leases expired.
    ClaimAndLoseLease {
        max: u32,
    },
    Heartbeat {
        op: usize,
        token: Token,
    },
    Complete {
        op: usize,
        token: Token,
    },
    Fail {
        op: usize,
        token: Token,
        retryable: bool,
    },
    /// Reads: `/stats`, `/metrics`, the webhook, operation and event lists, checked.
    ReadBack,
    /// Lets the dispatcher work for a while.
    Pause {
        ms: u64,
    },
    /// `kill -9` and a restart on the same database.
    Kill,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Hook {
    pub deleted: bool,
    pub patterns: usize,
    pub format: Format,
    pub user_disabled: bool,
    pub secret_version: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub event_type: String,
    pub key: Option<usize>,
    pub sequence: Option<u64>,
    /// Slots whose webhook existed, was not disabled by the user, and matched.
    pub fanout: Vec<usize>,
    /// The operation whose end raised it.
    pub op: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpState {
    Queued,
    Running,
    Succeeded,
    /// Done with this error code.
    Failed(&'static str),
}

impl OpState {
    pub fn is_done(&self) -> bool {
        matches!(self, OpState::Succeeded | OpState::Failed(_))
    }
}

pub const FAIL_CODE: &str = "MODEL_FAILURE";
pub const CANCELLED: &str = "CANCELLED";
pub const WORKER_LOST: &str = "WORKER_LOST";

#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    pub trigger: bool,
    pub input: u8,
    pub state: OpState,
    /// Claims so far.
    pub attempt: u32,
    pub cancel_requested: bool,
    pub deleted: bool,
    /// Lease tokens issued (one per claim).
    pub tokens: usize,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    pub hooks: Vec<Option<Hook>>,
    pub behaviours: Vec<Behaviour>,
    pub events: Vec<Event>,
    pub sequences: BTreeMap<usize, u64>,
    pub ops: Vec<Op>,
    /// (trigger route?, key) -> (input, operation).
    pub idempotency: BTreeMap<(bool, u8), (u8, usize)>,
    pub kills: u32,
}

/// What a worker call with `token` on `op` should get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseCheck {
    /// The token is the operation's current one.
    Valid,
    /// 409 `LEASE_STALE`.
    Stale,
    /// 409 (`OPERATION_DONE`): the operation has ended.
    Done,
}

impl Model {
    pub fn hook(&self, slot: usize) -> Option<&Hook> {
        self.hooks.get(slot).and_then(|h| h.as_ref())
    }

    pub fn live_hook(&self, slot: usize) -> Option<&Hook> {
        self.hook(slot).filter(|h| !h.deleted)
    }

    pub fn lease_check(&self, op: usize, token: Token) -> LeaseCheck {
        let o = &self.ops[op];
        if o.state.is_done() {
            return LeaseCheck::Done;
        }
        match token {
            Token::Latest if o.state == OpState::Running => LeaseCheck::Valid,
            _ => LeaseCheck::Stale,
        }
    }

    /// The queued operations a claim of `max` takes, oldest first.
    pub fn claimable(&self, max: u32) -> Vec<usize> {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.state == OpState::Queued)
            .map(|(i, _)| i)
            .take(max as usize)
            .collect()
    }

    fn fan_out(&self, event_type: &str) -> Vec<usize> {
        (0..HOOK_SLOTS)
            .filter(|s| {
                self.live_hook(*s)
                    .is_some_and(|h| !h.user_disabled && matches(PATTERNS[h.patterns], event_type))
            })
            .collect()
    }

    pub fn end_op(&mut self, op: usize, state: OpState) {
        let suffix = match &state {
            OpState::Succeeded => "succeeded",
            OpState::Failed(CANCELLED) => "cancelled",
            _ => "failed",
        };
        self.ops[op].state = state;
        let event_type = format!("transcode.{suffix}");
        let fanout = self.fan_out(&event_type);
        self.events.push(Event {
            event_type,
            key: None,
            sequence: None,
            fanout,
            op: Some(op),
        });
    }

    /// A retryable failure, a lost lease: back to the queue while attempts remain.
    fn requeue_or(&mut self, op: usize, otherwise: OpState) {
        let o = &self.ops[op];
        if o.cancel_requested {
            self.end_op(op, OpState::Failed(CANCELLED));
        } else if o.attempt < OP_MAX_ATTEMPTS {
            self.ops[op].state = OpState::Queued;
        } else {
            self.end_op(op, otherwise);
        }
    }

    /// The end of a sequence fails what is still running.
    pub fn drain(&mut self, op: usize) {
        self.end_op(op, OpState::Failed(FAIL_CODE));
    }

    /// A claim outside the generated steps (the end of a sequence drains the queue).
    pub fn claimed(&mut self, op: usize) {
        let o = &mut self.ops[op];
        o.state = OpState::Running;
        o.attempt += 1;
        o.tokens += 1;
    }
}
