//! The state machine: the steps a sequence may take (by the model's state), their
//! preconditions, and what each does to the model.

use super::*;

pub struct HeraldModel;

/// The step kinds `HERALD_MODEL_SKIP` (comma-separated, e.g. `RotateTwice,Kill`) leaves
/// out of every sequence, say while a bug they find is being fixed.
pub fn skip_list() -> &'static [String] {
    static SKIP: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    SKIP.get_or_init(|| {
        std::env::var("HERALD_MODEL_SKIP")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

fn skipped(step: &Step) -> bool {
    let skip = skip_list();
    if skip.is_empty() {
        return false;
    }
    let text = format!("{step:?}");
    let kind = text.split([' ', '{']).next().unwrap_or_default();
    skip.iter().any(|s| s == kind)
}

fn token(tokens: usize) -> BoxedStrategy<Token> {
    if tokens >= 2 {
        prop_oneof![3 => Just(Token::Latest), 1 => (0..tokens - 1).prop_map(Token::Older)].boxed()
    } else {
        Just(Token::Latest).boxed()
    }
}

impl ReferenceStateMachine for HeraldModel {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model {
            hooks: vec![None; HOOK_SLOTS],
            behaviours: vec![Behaviour::Healthy; HOOK_SLOTS],
            ..Model::default()
        })
        .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let mut options: Vec<(u32, BoxedStrategy<Step>)> = Vec::new();
        let free: Vec<usize> = (0..HOOK_SLOTS)
            .filter(|s| state.live_hook(*s).is_none())
            .collect();
        if !free.is_empty() {
            let weight = if free.len() == HOOK_SLOTS { 12 } else { 4 };
            options.push((
                weight,
                (
                    proptest::sample::select(free),
                    0..PATTERNS.len(),
                    0..SCHEDULES.len(),
                    prop_oneof![3 => Just(Format::Herald), 1 => Just(Format::Standard)],
                )
                    .prop_map(|(slot, patterns, schedule, format)| Step::CreateHook {
                        slot,
                        patterns,
                        schedule,
                        format,
                    })
                    .boxed(),
            ));
        }
        let created: Vec<usize> = (0..HOOK_SLOTS)
            .filter(|s| state.hook(*s).is_some())
            .collect();
        let live: Vec<usize> = (0..HOOK_SLOTS)
            .filter(|s| state.live_hook(*s).is_some())
            .collect();
        if !created.is_empty() {
            let any = || proptest::sample::select(created.clone());
            let change = prop_oneof![
                (0..PATTERNS.len()).prop_map(PatchChange::Events),
                (1..SCHEDULES.len()).prop_map(PatchChange::Schedule),
                Just(PatchChange::Description),
            ];
            options.push((
                3,
                (any(), change)
                    .prop_map(|(slot, change)| Step::PatchHook { slot, change })
                    .boxed(),
            ));
            options.push((3, any().prop_map(|slot| Step::PatchBurst { slot }).boxed()));
            options.push((2, any().prop_map(|slot| Step::DisableHook { slot }).boxed()));
            options.push((2, any().prop_map(|slot| Step::EnableHook { slot }).boxed()));
            options.push((2, any().prop_map(|slot| Step::DeleteHook { slot }).boxed()));
            let grace = prop_oneof![
                Just(Grace::Zero),
                Just(Grace::OneSecond),
                Just(Grace::Default)
            ];
            options.push((
                2,
                (any(), grace)
                    .prop_map(|(slot, grace)| Step::RotateSecret { slot, grace })
                    .boxed(),
            ));
            options.push((1, any().prop_map(|slot| Step::RotateTwice { slot }).boxed()));
            options.push((
                2,
                (any(), 0..8usize)
                    .prop_map(|(slot, pick)| Step::Redeliver { slot, pick })
                    .boxed(),
            ));
            let status = prop_oneof![
                Just(ReplayStatus::All),
                Just(ReplayStatus::Failed),
                Just(ReplayStatus::Succeeded)
            ];
            options.push((
                2,
                (any(), status)
                    .prop_map(|(slot, status)| Step::Replay { slot, status })
                    .boxed(),
            ));
        }
        if !live.is_empty() {
            let behaviour = prop_oneof![
                3 => Just(Behaviour::Healthy),
                2 => Just(Behaviour::Error500),
                2 => Just(Behaviour::Hang),
                2 => Just(Behaviour::Reset),
                2 => Just(Behaviour::Gone),
            ];
            options.push((
                6,
                (proptest::sample::select(live), behaviour)
                    .prop_map(|(slot, behaviour)| Step::SetBehaviour { slot, behaviour })
                    .boxed(),
            ));
        }
        if state.events.len() < MAX_EVENTS {
            options.push((
                12,
                (
                    prop_oneof![6 => 0..3usize, 1 => Just(3usize)],
                    proptest::option::of(0..KEYS.len()),
                )
                    .prop_map(|(event_type, key)| Step::Publish { event_type, key })
                    .boxed(),
            ));
        }
        let published: Vec<usize> = (0..state.events.len())
            .filter(|i| state.events[*i].op.is_none())
            .collect();
        if !published.is_empty() {
            options.push((
                1,
                (proptest::sample::select(published), any::<bool>())
                    .prop_map(|(event, same)| Step::Republish { event, same })
                    .boxed(),
            ));
        }
        if state.ops.len() < MAX_OPS {
            options.push((
                5,
                (any::<bool>(), proptest::option::of(0..2u8), 0..3u8)
                    .prop_map(|(trigger, idempotency_key, input)| Step::CreateOp {
                        trigger,
                        idempotency_key,
                        input,
                    })
                    .boxed(),
            ));
        }
        options.push((4, (1..=3u32).prop_map(|max| Step::Claim { max }).boxed()));
        options.push((
            1,
            (1..=2u32)
                .prop_map(|max| Step::ClaimAndLoseLease { max })
                .boxed(),
        ));
        // Worker calls, mostly on operations that are running.
        for (op, o) in state.ops.iter().enumerate().filter(|(_, o)| o.tokens > 0) {
            let weight = if o.state == OpState::Running { 4 } else { 1 };
            options.push((
                weight,
                (token(o.tokens), 0..4u8)
                    .prop_map(move |(token, kind)| match kind {
                        0 => Step::Heartbeat { op, token },
                        1 => Step::Complete { op, token },
                        2 => Step::Fail {
                            op,
                            token,
                            retryable: true,
                        },
                        _ => Step::Fail {
                            op,
                            token,
                            retryable: false,
                        },
                    })
                    .boxed(),
            ));
        }
        if !state.ops.is_empty() {
            let n = state.ops.len();
            options.push((2, (0..n).prop_map(|op| Step::CancelOp { op }).boxed()));
            options.push((2, (0..n).prop_map(|op| Step::DeleteOp { op }).boxed()));
        }
        options.push((2, Just(Step::ReadBack).boxed()));
        options.push((
            5,
            prop_oneof![Just(100u64), Just(250), Just(500)]
                .prop_map(|ms| Step::Pause { ms })
                .boxed(),
        ));
        options.push((1, Just(Step::Kill).boxed()));
        Union::new_weighted(options).boxed()
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        if skipped(step) {
            return false;
        }
        match step {
            Step::CreateHook { slot, .. } => *slot < HOOK_SLOTS && state.live_hook(*slot).is_none(),
            Step::PatchHook { slot, .. }
            | Step::PatchBurst { slot }
            | Step::DisableHook { slot }
            | Step::EnableHook { slot }
            | Step::DeleteHook { slot }
            | Step::RotateSecret { slot, .. }
            | Step::RotateTwice { slot }
            | Step::Redeliver { slot, .. }
            | Step::Replay { slot, .. } => state.hook(*slot).is_some(),
            Step::SetBehaviour { slot, .. } => state.live_hook(*slot).is_some(),
            Step::Publish { .. } => state.events.len() < MAX_EVENTS,
            Step::Republish { event, .. } => {
                state.events.get(*event).is_some_and(|e| e.op.is_none())
            }
            Step::CreateOp { .. } => state.ops.len() < MAX_OPS,
            Step::CancelOp { op } | Step::DeleteOp { op } => *op < state.ops.len(),
            Step::Heartbeat { op, token }
            | Step::Complete { op, token }
            | Step::Fail { op, token, .. } => state.ops.get(*op).is_some_and(|o| match token {
                Token::Latest => o.tokens >= 1,
                Token::Older(i) => *i + 1 < o.tokens,
            }),
            Step::Claim { .. }
            | Step::ClaimAndLoseLease { .. }
            | Step::ReadBack
            | Step::Pause { .. }
            | Step::Kill => true,
        }
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        match step {
            Step::CreateHook {
                slot,
                patterns,
                format,
                ..
            } => {
                state.hooks[*slot] = Some(Hook {
                    deleted: false,
                    patterns: *patterns,
                    format: *format,
                    user_disabled: false,
                    secret_version: 1,
                });
                state.behaviours[*slot] = Behaviour::Healthy;
            }
            Step::PatchHook { slot, change } => {
                if let Some(h) = state.hooks[*slot].as_mut().filter(|h| !h.deleted) {
                    if let PatchChange::Events(p) = change {
                        h.patterns = *p;
                    }
                }
            }
            Step::DisableHook { slot } | Step::EnableHook { slot } => {
                if let Some(h) = state.hooks[*slot].as_mut().filter(|h| !h.deleted) {
                    h.user_disabled = matches!(step, Step::DisableHook { .. });
                }
            }
            Step::DeleteHook { slot } => {
                if let Some(h) = state.hooks[*slot].as_mut() {
                    h.deleted = true;
                }
            }
            Step::RotateSecret { slot, .. } | Step::RotateTwice { slot } => {
                if let Some(h) = state.hooks[*slot].as_mut().filter(|h| !h.deleted) {
                    h.secret_version += if matches!(step, Step::RotateTwice { .. }) {
                        2
                    } else {
                        1
                    };
                }
            }
            Step::SetBehaviour { slot, behaviour } => state.behaviours[*slot] = *behaviour,
            Step::Publish { event_type, key } => {
                let event_type = EVENT_TYPES[*event_type];
                let sequence = key.map(|k| {
                    let s = state.sequences.entry(k).or_insert(0);
                    *s += 1;
                    *s
                });
                let fanout = state.fan_out(event_type);
                state.events.push(Event {
                    event_type: event_type.to_owned(),
                    key: *key,
                    sequence,
                    fanout,
                    op: None,
                });
            }
            Step::PatchBurst { .. }
            | Step::Republish { .. }
            | Step::Redeliver { .. }
            | Step::Replay { .. } => {}
            Step::CreateOp {
                trigger,
                idempotency_key,
                input,
            } => {
                let earlier = idempotency_key.and_then(|k| state.idempotency.get(&(*trigger, k)));
                if earlier.is_none() {
                    state.ops.push(Op {
                        trigger: *trigger,
                        input: *input,
                        state: OpState::Queued,
                        attempt: 0,
                        cancel_requested: false,
                        deleted: false,
                        tokens: 0,
                    });
                    if let Some(k) = idempotency_key {
                        state
                            .idempotency
                            .insert((*trigger, *k), (*input, state.ops.len() - 1));
                    }
                }
            }
            Step::CancelOp { op } => {
                let o = &state.ops[*op];
                if !o.deleted {
                    match o.state {
                        OpState::Queued => state.end_op(*op, OpState::Failed(CANCELLED)),
                        OpState::Running => state.ops[*op].cancel_requested = true,
                        _ => {}
                    }
                }
            }
            Step::DeleteOp { op } => {
                state.ops[*op].deleted = true;
                // Its Idempotency-Key is released: a retry makes a new operation.
                state.idempotency.retain(|_, (_, o)| o != op);
            }
            Step::Claim { max } | Step::ClaimAndLoseLease { max } => {
                for op in state.claimable(*max) {
                    let o = &mut state.ops[op];
                    o.state = OpState::Running;
                    o.attempt += 1;
                    o.tokens += 1;
                    if matches!(step, Step::ClaimAndLoseLease { .. }) {
                        state.requeue_or(op, OpState::Failed(WORKER_LOST));
                    }
                }
            }
            Step::Heartbeat { .. } => {}
            Step::Complete { op, token } => {
                if state.lease_check(*op, *token) == LeaseCheck::Valid {
                    state.end_op(*op, OpState::Succeeded);
                }
            }
            Step::Fail {
                op,
                token,
                retryable,
            } => {
                if state.lease_check(*op, *token) == LeaseCheck::Valid {
                    if *retryable {
                        // A retryable failure of an operation asked to cancel ends it failed.
                        let o = &state.ops[*op];
                        if o.attempt < OP_MAX_ATTEMPTS && !o.cancel_requested {
                            state.ops[*op].state = OpState::Queued;
                        } else {
                            state.end_op(*op, OpState::Failed(FAIL_CODE));
                        }
                    } else {
                        state.end_op(*op, OpState::Failed(FAIL_CODE));
                    }
                }
            }
            Step::ReadBack | Step::Pause { .. } => {}
            Step::Kill => state.kills += 1,
        }
        state
    }
}
