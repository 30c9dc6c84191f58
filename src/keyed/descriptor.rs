//! State descriptors: the name, kind and codecs of a keyed state, and the functions of reducing and
//! aggregating state (as Flink's `StateDescriptor` family).

use std::marker::PhantomData;

/// Marks the types a descriptor or state object stands for without owning them.
type Types<T> = PhantomData<fn() -> T>;
use std::sync::Arc;

use crate::keyed::ttl::StateTtlConfig;

/// Describes a value state holding `V` under namespace `N`.
pub struct ValueStateDescriptor<N, V> {
    pub(crate) name: String,
    pub(crate) ttl: Option<StateTtlConfig>,
    _types: Types<(N, V)>,
}

impl<N, V> ValueStateDescriptor<N, V> {
    /// With time-to-live `ttl` (`docs/ttl.md`): each entry expires `ttl.ttl_ms` after its last write and
    /// is never read again (under [`TtlVisibility::NeverReturnExpired`](crate::keyed::TtlVisibility)).
    /// Its values are stored with their last write's time, under the codec id `ttl(<value codec>)`: a
    /// state registered with TTL restores from a checkpoint written with TTL (whatever its `ttl_ms`),
    /// not from one written without it ([`Error::IncompatibleSchema`](crate::Error::IncompatibleSchema)).
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// A value state named `name` (unique within a backend).
    pub fn new(name: impl Into<String>) -> Self {
        ValueStateDescriptor {
            name: name.into(),
            ttl: None,
            _types: PhantomData,
        }
    }
}

/// Describes a list state of `V` elements under namespace `N`.
pub struct ListStateDescriptor<N, V> {
    pub(crate) name: String,
    pub(crate) ttl: Option<StateTtlConfig>,
    _types: Types<(N, V)>,
}

impl<N, V> ListStateDescriptor<N, V> {
    /// With time-to-live `ttl`, per element: each element expires `ttl.ttl_ms` after it was added (or
    /// the list last updated), as [`ValueStateDescriptor::with_ttl`].
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// A list state named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ListStateDescriptor {
            name: name.into(),
            ttl: None,
            _types: PhantomData,
        }
    }
}

/// Describes a map state from `UK` to `V` under namespace `N`.
pub struct MapStateDescriptor<N, UK, V> {
    pub(crate) name: String,
    pub(crate) ttl: Option<StateTtlConfig>,
    _types: Types<(N, UK, V)>,
}

impl<N, UK, V> MapStateDescriptor<N, UK, V> {
    /// With time-to-live `ttl`, per entry: each user key's entry expires `ttl.ttl_ms` after it was last
    /// put, as [`ValueStateDescriptor::with_ttl`].
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// A map state named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        MapStateDescriptor {
            name: name.into(),
            ttl: None,
            _types: PhantomData,
        }
    }
}

/// A reduce function: combines the stored value with an added one.
pub type ReduceFn<V> = Arc<dyn Fn(&V, &V) -> V + Send + Sync>;

/// Describes a reducing state of `V` under namespace `N`.
pub struct ReducingStateDescriptor<N, V> {
    pub(crate) name: String,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) reduce: ReduceFn<V>,
    _types: Types<N>,
}

impl<N, V> ReducingStateDescriptor<N, V> {
    /// With time-to-live `ttl` on the reduced value: it expires `ttl.ttl_ms` after the last add, and an
    /// add after that starts from the added value alone, as [`ValueStateDescriptor::with_ttl`].
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// A reducing state named `name` that combines values with `reduce(stored, added)`.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(&V, &V) -> V + Send + Sync + 'static,
    ) -> Self {
        ReducingStateDescriptor {
            name: name.into(),
            ttl: None,
            reduce: Arc::new(reduce),
            _types: PhantomData,
        }
    }
}

/// An aggregate function, as Flink's `AggregateFunction`: folds inputs `IN` into an accumulator `ACC` and
/// reads a result `OUT` from it.
pub trait AggregateFunction<IN, ACC, OUT>: Send + Sync {
    /// A fresh accumulator.
    fn create_accumulator(&self) -> ACC;
    /// Folds `value` into `acc`.
    fn add(&self, value: &IN, acc: &mut ACC);
    /// The result of an accumulator.
    fn get_result(&self, acc: &ACC) -> OUT;
    /// Merges two accumulators into one (session windows merging, [`AggregatingState::merge_namespaces`](crate::AggregatingState::merge_namespaces)).
    fn merge(&self, a: ACC, b: ACC) -> ACC;
}

/// Describes an aggregating state under namespace `N`; only the accumulator `ACC` is stored.
pub struct AggregatingStateDescriptor<N, IN, ACC, OUT> {
    pub(crate) name: String,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) function: Arc<dyn AggregateFunction<IN, ACC, OUT>>,
    _types: Types<N>,
}

impl<N, IN, ACC, OUT> AggregatingStateDescriptor<N, IN, ACC, OUT> {
    /// With time-to-live `ttl` on the accumulator: it expires `ttl.ttl_ms` after the last add, and an add
    /// after that starts from a fresh accumulator, as [`ValueStateDescriptor::with_ttl`].
    pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// An aggregating state named `name` driven by `function`.
    pub fn new(
        name: impl Into<String>,
        function: impl AggregateFunction<IN, ACC, OUT> + 'static,
    ) -> Self {
        AggregatingStateDescriptor {
            name: name.into(),
            ttl: None,
            function: Arc::new(function),
            _types: PhantomData,
        }
    }
}
