//! The keyed state API: descriptors, the backend trait and the typed state objects.

pub(crate) mod backend;
pub(crate) mod checks;
pub(crate) mod descriptor;
pub(crate) mod heads;
pub(crate) mod identity;
pub(crate) mod ledger;
pub(crate) mod map_iter;
pub(crate) mod read_refresh;
pub(crate) mod state;
pub(crate) mod state_ops;
pub(crate) mod timers;
pub(crate) mod ttl;
pub(crate) mod ttl_refresh;
pub(crate) mod ttl_switch;
pub(crate) mod typed;

pub use backend::{KeyedStateBackend, PendingSnapshot, StateId, StateKey, StateValue};
pub use descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReduceFn, ReducingStateDescriptor, ValueStateDescriptor,
};
pub use identity::SubtaskIdentity;
pub use map_iter::MapEntries;
pub use state::{AggregatingState, ListState, MapState, ReducingState, ValueState};
pub use timers::{Fired, TimeDomain, Timer, TimerService, TimerServiceDescriptor};
pub use ttl::{Stamped, StateTtlConfig, TtlTime, TtlUpdate, TtlVisibility};
