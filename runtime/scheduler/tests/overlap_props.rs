//! Property: under every policy but `AllowAll`, no sequence of fires and finishes ever
//! has two runs of a workflow in flight; no fire is lost under `BufferAll`; `Skip`
//! never buffers; `BufferOne` never holds more than one fire.

use proptest::prelude::*;
use sluice_scheduler::{OnFinish, OnFire, OverlapPolicy, OverlapState};

#[derive(Debug, Clone, Copy)]
enum Step {
    Fire,
    Finish,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    proptest::collection::vec(prop_oneof![Just(Step::Fire), Just(Step::Finish)], 0..200)
}

fn policies() -> impl Strategy<Value = OverlapPolicy> {
    prop_oneof![
        Just(OverlapPolicy::Skip),
        Just(OverlapPolicy::BufferOne),
        Just(OverlapPolicy::BufferAll),
        Just(OverlapPolicy::CancelOther),
        Just(OverlapPolicy::AllowAll),
    ]
}

proptest! {
    #[test]
    fn runs_never_overlap_unless_allowed(policy in policies(), steps in steps()) {
        let mut state = OverlapState::default();
        // The model: runs actually in flight, counted from the actions alone.
        let (mut in_flight, mut started, mut fires, mut dropped) = (0u32, 0u32, 0u32, 0u32);
        for step in steps {
            match step {
                Step::Fire => {
                    fires += 1;
                    match policy.on_fire(&mut state) {
                        OnFire::Start => { in_flight += 1; started += 1; }
                        OnFire::Dropped => dropped += 1,
                        OnFire::Buffered | OnFire::CancelRunning => {}
                    }
                }
                Step::Finish if in_flight > 0 => {
                    in_flight -= 1;
                    if policy.on_finish(&mut state) == OnFinish::StartBuffered {
                        in_flight += 1;
                        started += 1;
                    }
                }
                Step::Finish => {}
            }
            prop_assert_eq!(state.running, in_flight);
            if policy != OverlapPolicy::AllowAll {
                prop_assert!(in_flight <= 1, "{:?}: {} in flight", policy, in_flight);
            }
            match policy {
                OverlapPolicy::Skip => prop_assert_eq!(state.buffered, 0),
                OverlapPolicy::BufferOne | OverlapPolicy::CancelOther => {
                    prop_assert!(state.buffered <= 1)
                }
                OverlapPolicy::BufferAll | OverlapPolicy::AllowAll => {
                    prop_assert_eq!(dropped, 0);
                    prop_assert_eq!(started + state.buffered, fires);
                }
            }
        }
    }
}

#[test]
fn cancel_other_cancels_the_run_in_flight_and_starts_after_it() {
    let p = OverlapPolicy::CancelOther;
    let mut s = OverlapState::default();
    assert_eq!(p.on_fire(&mut s), OnFire::Start);
    assert_eq!(p.on_fire(&mut s), OnFire::CancelRunning);
    assert_eq!(p.on_finish(&mut s), OnFinish::StartBuffered);
    assert_eq!(
        s,
        OverlapState {
            running: 1,
            buffered: 0
        }
    );
}
