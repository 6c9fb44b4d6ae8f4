//! The training graph and its session, [`TrainGraph`]: forward, loss, gradients, momentum
//! apply, state transfer, checkpoint ops. Every placeholder, fetch handle and target is made once
//! in `build`; a step only fills a `SessionRunArgs` (nothing is looked up by name while training).
//!
//! The step protocol the trainer follows:
//! 1. [`TrainGraph::gradients`]: forward + backward of `total_loss * loss_scale`, fetch the
//!    gradients as one flat f32 vector divided by `loss_scale` again, and update batch-norm moving
//!    statistics in the same run. A graph built without loss scaling differentiates `total_loss`
//!    itself and takes only a scale of 1.
//! 2. (elsewhere) all-reduce the flat vector; check it is finite (dynamic loss scaling).
//! 3. [`TrainGraph::apply`]: feed the flat vector and the learning rate; momentum update.
use super::feed::{AsFeed, FeedPool};
use super::graph::{device_scope, new_session, BatchInputs};
use super::layers::Net;
use super::optim;
use super::outputs::{fetch_metrics, request, request_metrics, FusedOutput, Gradients, StepOutput};
use super::overlap::{Backward, GradientQueues, GroupReader};
use super::rewrite::{self, Rebind};
use super::saver::Saver;
use super::tf::{self, Var};
use super::{loss, resnet, BuildContext, ModelConfig, ModelError};
use super::{CheckpointMeta, Checkpointable};
use std::ops::Range;
use std::path::Path;
use tensorflow::{
    ops, DataType, ImportGraphDefOptions, Operation, Output, Scope, Session, SessionRunArgs, Shape,
    Status, Tensor,
};

/// One trainable variable in the flat layout: gradients and `apply` feeds hold `len` floats of it
/// after those of the variables before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarInfo {
    /// Graph node name and checkpoint key, e.g. `resnet/stage1/block0/conv1/kernel`.
    pub name: String,
    pub shape: Vec<i64>,
    pub len: usize,
}

/// Node names of one training step (see [`TrainGraph::graph_def`]); outputs are `name:index`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepNodes {
    pub images: String,
    pub labels: String,
    pub loss_scale: String,
    pub learning_rate: String,
    pub flat_gradients_in: String,
    pub gradients: String,
    pub loss: String,
    pub bn_update: String,
    pub apply: String,
    /// The one-run step's update (gated on `finite`, a bool output).
    pub fused_apply: String,
    pub finite: String,
    pub init: String,
}

fn scalar_placeholder(scope: &mut Scope, name: &str) -> Result<Operation, Status> {
    ops::Placeholder::new()
        .dtype(DataType::Float)
        .shape(Shape::from(Some(vec![])))
        .build(&mut scope.with_op_name(name))
}

fn flat_placeholder(scope: &mut Scope, name: &str, len: usize) -> Result<Operation, Status> {
    ops::Placeholder::new()
        .dtype(DataType::Float)
        .shape(Shape::from(Some(vec![Some(len as i64)])))
        .build(&mut scope.with_op_name(name))
}

/// Training graph and its session. Build once per process; every method only runs it.
pub struct TrainGraph {
    cfg: ModelConfig,
    _scope: Scope,
    session: Session,
    inputs: BatchInputs,
    loss_scale: Operation,
    learning_rate: Operation,
    flat_grads_in: Operation,
    state_in: Operation,
    grads: Output, // [P] f32, unscaled
    loss: Output,
    total_loss: Output,
    top1: Output,
    top5: Output,
    bn_update: Operation,
    apply: Operation,
    /// One-run step: momentum from the in-graph gradients, gated on `finite`.
    fused_apply: Operation,
    finite: Output,
    /// Per-variable unscaled gradients, for the overlap queues.
    unscaled: Vec<Output>,
    queues: Option<GradientQueues>,
    init: Operation,
    state: Output, // [S] f32
    state_assign: Operation,
    /// Bool scalar: every weight, moving statistic and momentum slot is finite (by sums).
    state_finite: Output,
    trainable: Vec<VarInfo>,
    /// Every state variable in state order (trainables first).
    state_vars: Vec<VarInfo>,
    state_len: usize,
    saver: Saver,
}

fn infos(vars: &[&Var]) -> Vec<VarInfo> {
    vars.iter()
        .map(|v| VarInfo {
            name: v.name.clone(),
            shape: v.shape.clone(),
            len: v.len(),
        })
        .collect()
}

impl TrainGraph {
    /// Builds the whole training graph and a session over it. Variables are uninitialised until
    /// [`TrainGraph::init`], [`TrainGraph::state_from_host`] or [`checkpoint::restore`](crate::checkpoint::restore).
    pub fn build(cfg: &ModelConfig) -> Result<TrainGraph, ModelError> {
        cfg.validate()?;
        let root = Scope::new_root_scope();
        let mut scope = device_scope(&root, cfg);
        let inputs = BatchInputs::build(&mut scope).building("input placeholders")?;
        let loss_scale = scalar_placeholder(&mut scope, "loss_scale").building("loss_scale")?;
        let learning_rate =
            scalar_placeholder(&mut scope, "learning_rate").building("learning_rate")?;

        // Forward pass and objective.
        let mut net = Net::new(cfg, true);
        let logits = resnet::forward(&mut net, &mut scope, inputs.images.clone().into())
            .building("resnet")?;
        let labels: Output = inputs.labels.clone().into();
        let (loss, total_loss, top1, top5) =
            objective(&mut scope, &net, logits, labels).building("loss")?;

        // Gradients of the scaled loss w.r.t. each variable's read, then unscaled, flat. Without
        // loss scaling the scale is 1 and both multiplications are left out.
        let vars: Vec<&Var> = net.trainable.iter().map(|(v, _)| v).collect();
        let reads: Vec<Output> = vars.iter().map(|v| v.read.clone()).collect();
        let names: Vec<String> = vars.iter().map(|v| v.name.clone()).collect();
        let unscaled = if cfg.loss_scaling {
            let s = &mut scope;
            let scaled =
                ops::mul(total_loss.clone(), loss_scale.clone(), s).building("scaled loss")?;
            let per_var = tf::gradients(s, &scaled.into(), &reads, &names).building("gradients")?;
            let mut g = s.new_sub_scope("unscale");
            let inv = ops::reciprocal(loss_scale.clone(), &mut g).building("unscale")?;
            per_var
                .into_iter()
                .map(|d| Ok(ops::mul(d, inv.clone(), &mut g)?.into()))
                .collect::<Result<Vec<Output>, Status>>()
                .building("unscale")?
        } else {
            tf::gradients(&mut scope, &total_loss, &reads, &names).building("gradients")?
        };
        let grads = optim::flat_concat(&mut scope.new_sub_scope("flat"), &unscaled)
            .building("flat gradients")?;
        let bn_update =
            tf::group(&mut scope, "bn_update", &net.bn_updates).building("bn_update")?;

        // Momentum from the fed flat gradients (all-reduced on the host).
        let slots = optim::slots(&mut scope, &vars).building("momentum slots")?;
        let total: usize = vars.iter().map(|v| v.len()).sum();
        let mut a = scope.new_sub_scope("apply");
        let flat_grads_in = flat_placeholder(&mut a, "flat_gradients", total).building("apply")?;
        let fed =
            optim::split_flat(&mut a, flat_grads_in.clone().into(), &vars).building("apply")?;
        let lr: Output = learning_rate.clone().into();
        let (m, nest) = (cfg.momentum, cfg.nesterov);
        let apply = optim::apply_momentum(&mut a, &vars, &slots, &fed, lr.clone(), m, nest)
            .building("apply")?;
        // The same update straight from the gradients, for one rank (nothing to average): it
        // runs only when the loss and every gradient are finite. The gate also orders it after
        // every read of the weights, which the update overwrites in place.
        let mut f = scope.new_sub_scope("fused");
        let checked = [loss.clone(), total_loss.clone()];
        let finite = optim::all_finite(&mut f, &checked, &unscaled).building("fused")?;
        let gated = optim::gate(&mut f, &unscaled, finite.clone()).building("fused")?;
        let fused_apply =
            optim::apply_momentum(&mut f, &vars, &slots, &gated, lr, m, nest).building("fused")?;
        // All state, in one fixed order: trainables, BN moving statistics, momentum slots.
        let state_vars: Vec<&Var> = vars
            .iter()
            .copied()
            .chain(net.moving.iter())
            .chain(slots.iter())
            .collect();
        let (state, state_in, state_assign, init) =
            state_ops(&mut scope.new_sub_scope("state"), &state_vars).building("state transfer")?;
        // Checked before a checkpoint is written, so a diverged model is never saved.
        let state_reads: Vec<Output> = state_vars.iter().map(|v| v.read.clone()).collect();
        let state_finite =
            optim::all_finite(&mut scope.new_sub_scope("state_check"), &[], &state_reads)
                .building("state check")?;
        let saver = Saver::build(&mut root.new_sub_scope("checkpoint"), &state_vars)
            .building("checkpoint ops")?;

        let trainable = infos(&vars);
        let state_infos = infos(&state_vars);
        let state_len = state_vars.iter().map(|v| v.len()).sum();

        // The graph the session runs: this one rewritten so that every batch norm fuses with its
        // ReLU (rewrite.rs), imported into a fresh graph; every handle is taken over by name.
        let def = scope.graph().graph_def().building("graph_def")?;
        let ranks = rewrite::known_ranks(&scope.graph()).building("static ranks")?;
        let (def, _) = rewrite::for_fusion(&def, &ranks).building("graph rewrite for fusion")?;
        let mut fresh = Scope::new_root_scope();
        fresh
            .graph_mut()
            .import_graph_def(&def, &ImportGraphDefOptions::new())
            .building("rewritten graph")?;
        let scope = device_scope(&fresh, cfg);
        let graph = fresh.graph();
        let to = Rebind(&graph);
        let op = |o: &Operation| to.op(o).building("rewritten graph");
        let out = |o: &Output| to.out(o).building("rewritten graph");
        Ok(TrainGraph {
            cfg: cfg.clone(),
            session: new_session(&scope, cfg)?,
            inputs: BatchInputs {
                images: op(&inputs.images)?,
                labels: op(&inputs.labels)?,
                pool: inputs.pool,
            },
            loss_scale: op(&loss_scale)?,
            learning_rate: op(&learning_rate)?,
            flat_grads_in: op(&flat_grads_in)?,
            state_in: op(&state_in)?,
            grads: out(&grads)?,
            loss: out(&loss)?,
            total_loss: out(&total_loss)?,
            top1: out(&top1)?,
            top5: out(&top5)?,
            bn_update: op(&bn_update)?,
            apply: op(&apply)?,
            fused_apply: op(&fused_apply)?,
            finite: out(&finite)?,
            unscaled: unscaled.iter().map(out).collect::<Result<_, _>>()?,
            queues: None,
            init: op(&init)?,
            state: out(&state)?,
            state_assign: op(&state_assign)?,
            state_finite: out(&state_finite)?,
            trainable,
            state_vars: state_infos,
            state_len,
            saver: saver.rebind(&to).building("rewritten graph")?,
            _scope: scope,
        })
    }

    /// Runs every initialiser. Deterministic: each random initialiser is seeded from `cfg.seed`
    /// and its position in the graph, so equal configs give equal weights.
    pub fn init(&mut self) -> Result<(), ModelError> {
        let mut args = SessionRunArgs::new();
        args.add_target(&self.init);
        self.run(&mut args, "init")
    }

    /// The trainable variables in flat-gradient order (fixed by the config).
    pub fn trainable(&self) -> &[VarInfo] {
        &self.trainable
    }

    /// P, the number of trainable floats (length of the flat gradient).
    pub fn num_params(&self) -> usize {
        self.trainable.iter().map(|v| v.len).sum()
    }

    /// Every state variable (trainables, BN moving statistics, `<var>/Momentum` slots) in the
    /// order of [`TrainGraph::state_to_host`]; also the checkpoint's variable list.
    pub fn state(&self) -> &[VarInfo] {
        &self.state_vars
    }

    /// S, the number of state floats (length of [`TrainGraph::state_to_host`]).
    pub fn state_len(&self) -> usize {
        self.state_len
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The pool this graph's image tensors come from: fill a [`Feed`](super::Feed) from it on
    /// another thread, ahead of the step, and the step does not copy the batch.
    pub fn feed_pool(&self) -> FeedPool {
        self.inputs.pool.clone()
    }

    /// The serialised GraphDef and the node names a step feeds, fetches and runs, so an outside
    /// profiler (`bench/py/profile_step.py`) can trace exactly this graph op by op.
    pub fn graph_def(&self) -> Result<(Vec<u8>, StepNodes), ModelError> {
        let def = self._scope.graph().graph_def().building("graph_def")?;
        let name = |op: &Operation| {
            op.name()
                .map_err(tensorflow::Status::from)
                .building("node name")
        };
        let out = |o: &Output| Ok::<_, ModelError>(format!("{}:{}", name(&o.operation)?, o.index));
        let nodes = StepNodes {
            images: name(&self.inputs.images)?,
            labels: name(&self.inputs.labels)?,
            loss_scale: name(&self.loss_scale)?,
            learning_rate: name(&self.learning_rate)?,
            flat_gradients_in: name(&self.flat_grads_in)?,
            gradients: out(&self.grads)?,
            loss: out(&self.total_loss)?,
            bn_update: name(&self.bn_update)?,
            apply: name(&self.apply)?,
            fused_apply: name(&self.fused_apply)?,
            finite: out(&self.finite)?,
            init: name(&self.init)?,
        };
        Ok((def, nodes))
    }

    /// Forward + backward on one batch;
    /// returns unscaled flat gradients and the batch metrics, and updates the batch-norm moving
    /// statistics in the same run. Weights are not changed. Without loss scaling in the graph, a
    /// `loss_scale` other than 1 is an error.
    pub fn gradients(
        &mut self,
        batch: &impl AsFeed,
        loss_scale: f32,
    ) -> Result<StepOutput, ModelError> {
        let feed = self.inputs.feed(batch, self.cfg.num_classes)?;
        let scale = self.scale_feed(loss_scale)?;
        let mut args = SessionRunArgs::new();
        feed.add_to(&mut args, &self.inputs.images, &self.inputs.labels);
        args.add_feed(&self.loss_scale, 0, &scale);
        let g = request(&mut args, &self.grads);
        let m = request_metrics(&mut args, self.metric_outputs());
        args.add_target(&self.bn_update);
        self.run(&mut args, "gradients")?;
        let grads = args.fetch::<f32>(g).map_err(|source| ModelError::Run {
            what: "fetching gradients",
            source: source.into(),
        })?;
        Ok(StepOutput {
            grads: Gradients(grads),
            metrics: fetch_metrics(&mut args, m)?,
        })
    }

    /// Momentum update from the (averaged) gradients at this step's learning rate `lr`.
    pub fn apply(&mut self, grads: &Gradients, lr: f32) -> Result<(), ModelError> {
        if grads.len() != self.num_params() {
            return Err(ModelError::Input {
                what: "gradients",
                detail: format!(
                    "{} floats, the graph has {}",
                    grads.len(),
                    self.num_params()
                ),
            });
        }
        let lr = Tensor::from(lr);
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.flat_grads_in, 0, &grads.0);
        args.add_feed(&self.learning_rate, 0, &lr);
        args.add_target(&self.apply);
        self.run(&mut args, "apply")
    }

    /// The whole step of a single rank in one session run: forward, backward, batch-norm
    /// statistics, and the momentum update when the loss and all gradients are finite (else
    /// the weights are left as they were). The gradients never leave the graph. Without loss
    /// scaling in the graph, a `loss_scale` other than 1 is an error.
    pub fn fused_step(
        &mut self,
        batch: &impl AsFeed,
        loss_scale: f32,
        lr: f32,
    ) -> Result<FusedOutput, ModelError> {
        let feed = self.inputs.feed(batch, self.cfg.num_classes)?;
        let scale = self.scale_feed(loss_scale)?;
        let lr = Tensor::from(lr);
        let mut args = SessionRunArgs::new();
        feed.add_to(&mut args, &self.inputs.images, &self.inputs.labels);
        args.add_feed(&self.loss_scale, 0, &scale);
        args.add_feed(&self.learning_rate, 0, &lr);
        let f = request(&mut args, &self.finite);
        let m = request_metrics(&mut args, self.metric_outputs());
        args.add_target(&self.bn_update);
        args.add_target(&self.fused_apply);
        self.run(&mut args, "fused step")?;
        let applied = args.fetch::<bool>(f).map_err(|source| ModelError::Run {
            what: "fetching the finite check",
            source: source.into(),
        })?[0];
        Ok(FusedOutput {
            metrics: fetch_metrics(&mut args, m)?,
            applied,
        })
    }

    /// The scale as a tensor to feed; a graph built without loss scaling takes only 1, the
    /// scale it was built for, rather than silently ignoring another.
    fn scale_feed(&self, loss_scale: f32) -> Result<Tensor<f32>, ModelError> {
        if !self.cfg.loss_scaling && loss_scale != 1.0 {
            return Err(ModelError::Input {
                what: "loss scale",
                detail: format!("{loss_scale}, but this graph was built without loss scaling"),
            });
        }
        Ok(Tensor::from(loss_scale))
    }

    fn metric_outputs(&self) -> [&Output; 4] {
        [&self.loss, &self.total_loss, &self.top1, &self.top5]
    }

    /// Adds one gradient queue per group (`groups`: ranges of variable indices, in order,
    /// covering every trainable) for [`TrainGraph::overlapped`]. Once per graph.
    pub fn enable_overlap(&mut self, groups: &[Range<usize>]) -> Result<(), ModelError> {
        let covered = groups
            .iter()
            .try_fold(0, |at, g| (g.start == at).then_some(g.end));
        if self.queues.is_some() || covered != Some(self.trainable.len()) {
            return Err(ModelError::Input {
                what: "gradient groups",
                detail: format!(
                    "{groups:?} must cover the {} trainables in order, once per graph",
                    self.trainable.len()
                ),
            });
        }
        let lens: Vec<usize> = self.trainable.iter().map(|v| v.len).collect();
        let mut s = self._scope.new_sub_scope("overlap");
        let queues = GradientQueues::build(&mut s, &self.unscaled, &lens, groups)
            .building("gradient queues")?;
        self.queues = Some(queues);
        Ok(())
    }

    /// The two halves of an overlapped step on `batch` (see `model/overlap.rs`): run
    /// [`Backward::run`] on one thread while this one takes the groups with
    /// [`GroupReader::take`]; then [`TrainGraph::apply`] the averaged whole. Without loss
    /// scaling in the graph, a `loss_scale` other than 1 is an error.
    pub fn overlapped<'a>(
        &'a self,
        batch: &'a impl AsFeed,
        loss_scale: f32,
    ) -> Result<(Backward<'a>, GroupReader<'a>), ModelError> {
        let queues = self.queues.as_ref().ok_or(ModelError::Input {
            what: "overlapped step",
            detail: "enable_overlap was not called".into(),
        })?;
        let feed = self.inputs.feed(batch, self.cfg.num_classes)?;
        let backward = Backward {
            session: &self.session,
            loss_scale: (self.loss_scale.clone(), self.scale_feed(loss_scale)?),
            inputs: (self.inputs.images.clone(), self.inputs.labels.clone()),
            feed,
            metrics: self.metric_outputs(),
            targets: [&self.bn_update, &queues.enqueue_all],
            queues,
        };
        let reader = GroupReader {
            session: &self.session,
            queues,
        };
        Ok((backward, reader))
    }

    /// All state (trainables, BN moving statistics, momentum slots, in that order) as one flat
    /// vector: what rank 0 broadcasts so every rank starts identical.
    pub fn state_to_host(&mut self) -> Result<Vec<f32>, ModelError> {
        let mut args = SessionRunArgs::new();
        let token = request(&mut args, &self.state);
        self.run(&mut args, "state_to_host")?;
        let t = args.fetch::<f32>(token).map_err(|source| ModelError::Run {
            what: "fetching state",
            source: source.into(),
        })?;
        Ok(t.to_vec())
    }

    /// True when every weight, batch-norm moving statistic and momentum slot is finite: one
    /// pass over the state in the graph, nothing copied out. It tests each variable's sum, so
    /// a variable whose finite values sum beyond f32's range counts as not finite too.
    pub fn state_is_finite(&self) -> Result<bool, ModelError> {
        let mut args = SessionRunArgs::new();
        let token = request(&mut args, &self.state_finite);
        self.run(&mut args, "checking the state is finite")?;
        let t = args
            .fetch::<bool>(token)
            .map_err(|source| ModelError::Run {
                what: "fetching the state check",
                source: source.into(),
            })?;
        Ok(t[0])
    }

    /// Overwrites all state from a vector made by [`TrainGraph::state_to_host`] of the same config.
    pub fn state_from_host(&mut self, state: &[f32]) -> Result<(), ModelError> {
        let flat = self.flat_tensor(state, self.state_len, "state")?;
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.state_in, 0, &flat);
        args.add_target(&self.state_assign);
        self.run(&mut args, "state_from_host")
    }

    fn flat_tensor(
        &self,
        values: &[f32],
        want: usize,
        what: &'static str,
    ) -> Result<Tensor<f32>, ModelError> {
        if values.len() != want {
            return Err(ModelError::Input {
                what,
                detail: format!("{} floats, the graph has {want}", values.len()),
            });
        }
        Tensor::new(&[want as u64])
            .with_values(values)
            .map_err(|source| ModelError::Run {
                what,
                source: source.into(),
            })
    }

    fn run(&self, args: &mut SessionRunArgs, what: &'static str) -> Result<(), ModelError> {
        self.session.run(args).map_err(|source| ModelError::Run {
            what,
            source: source.into(),
        })
    }
}

impl Checkpointable for TrainGraph {
    fn write_bundle(&self, prefix: &Path, meta: &CheckpointMeta) -> Result<(), ModelError> {
        self.saver.write(&self.session, prefix, meta)
    }

    fn read_bundle(&mut self, prefix: &Path) -> Result<CheckpointMeta, ModelError> {
        self.saver.read(&self.session, prefix)
    }
}

/// (loss, total_loss, top1, top5) scalars from the logits. `logits`: [N, K] f32.
fn objective(
    scope: &mut Scope,
    net: &Net,
    logits: Output,
    labels: Output,
) -> Result<(Output, Output, Output, Output), Status> {
    let cfg = &net.cfg;
    let mut s = scope.new_sub_scope("loss");
    let xent = loss::cross_entropy(
        &mut s,
        logits.clone(),
        labels.clone(),
        cfg.num_classes,
        cfg.label_smoothing,
    )?;
    let mean = loss::mean(&mut s, xent)?;
    let l2 = loss::l2_penalty(&mut s, &net.trainable, cfg.decay_bn, cfg.decay_bias)?;
    let wd = tf::const_f32(&mut s, &[cfg.weight_decay])?;
    let decay = ops::mul(wd, l2, &mut s)?;
    let total: Output = ops::add_v2(mean.clone(), decay, &mut s.with_op_name("total_loss"))?.into();
    let mut m = scope.new_sub_scope("metrics");
    let hit1 = loss::in_top_k(&mut m, logits.clone(), labels.clone(), 1)?;
    let hit5 = loss::in_top_k(&mut m, logits, labels, 5)?;
    let top1 = loss::mean(&mut m, hit1)?;
    let top5 = loss::mean(&mut m, hit5)?;
    Ok((mean, total, top1, top5))
}

/// (flat state read [S], flat state feed, assign-all op, init-all op) over `vars` in order.
fn state_ops(
    scope: &mut Scope,
    vars: &[&Var],
) -> Result<(Output, Operation, Operation, Operation), Status> {
    let reads: Vec<Output> = vars.iter().map(|v| v.read.clone()).collect();
    let flat = optim::flat_concat(scope, &reads)?;
    let len = vars.iter().map(|v| v.len()).sum();
    let feed = flat_placeholder(scope, "flat", len)?;
    let parts = optim::split_flat(scope, feed.clone().into(), vars)?;
    let mut assigns = Vec::with_capacity(vars.len());
    for (v, p) in vars.iter().zip(parts) {
        assigns.push(ops::assign(v.output(), p, scope)?);
    }
    let assign = tf::group(scope, "assign", &assigns)?;
    let inits: Vec<Operation> = vars.iter().map(|v| v.init.clone()).collect();
    let init = tf::group(scope, "init", &inits)?;
    Ok((flat, feed, assign, init))
}
