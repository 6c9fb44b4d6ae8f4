//! The inference graph and its session, [`EvalGraph`]: the network with batch norm on its
//! moving statistics and the counts of one batch, restored from a training checkpoint.
use super::feed::{AsFeed, FeedPool};
use super::graph::{device_scope, new_session, BatchInputs};
use super::layers::Net;
use super::outputs::{fetch_scalar, request};
use super::saver::Saver;
use super::tf::{self, Var};
use super::{loss, resnet, BuildContext, ModelConfig, ModelError};
use super::{CheckpointMeta, Checkpointable};
use std::path::Path;
use tensorflow::{Operation, Output, Scope, Session, SessionRunArgs, Status};

/// Evaluation counts of one batch; sums over batches give the accuracy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOutput {
    pub correct_top1: usize,
    pub correct_top5: usize,
    /// Sum over the batch of the (unsmoothed) cross-entropy.
    pub loss_sum: f64,
    pub n: usize,
}

/// Inference graph: same node names as [`TrainGraph`](super::TrainGraph), batch norm on moving statistics, no
/// optimizer. Deterministic for a given checkpoint and batch.
pub struct EvalGraph {
    cfg: ModelConfig,
    _scope: Scope,
    session: Session,
    inputs: BatchInputs,
    correct1: Output,
    correct5: Output,
    loss_sum: Output,
    init: Operation,
    saver: Saver,
}

impl EvalGraph {
    pub fn build(cfg: &ModelConfig) -> Result<EvalGraph, ModelError> {
        cfg.validate()?;
        let root = Scope::new_root_scope();
        let mut scope = device_scope(&root, cfg);
        let inputs = BatchInputs::build(&mut scope).building("input placeholders")?;
        let mut net = Net::new(cfg, false);
        let logits = resnet::forward(&mut net, &mut scope, inputs.images.clone().into())
            .building("resnet")?;
        let labels: Output = inputs.labels.clone().into();
        let (correct1, correct5, loss_sum) = {
            let mut m = scope.new_sub_scope("eval");
            let s = &mut m;
            let mut build = || -> Result<_, Status> {
                let xent =
                    loss::cross_entropy(s, logits.clone(), labels.clone(), cfg.num_classes, 0.0)?;
                let loss_sum = loss::sum(s, xent)?;
                let hit1 = loss::in_top_k(s, logits.clone(), labels.clone(), 1)?;
                let hit5 = loss::in_top_k(s, logits.clone(), labels.clone(), 5)?;
                Ok((loss::sum(s, hit1)?, loss::sum(s, hit5)?, loss_sum))
            };
            build().building("eval metrics")?
        };
        let vars: Vec<&Var> = net.inference_vars();
        let inits: Vec<Operation> = vars.iter().map(|v| v.init.clone()).collect();
        let init = tf::group(&mut scope, "init", &inits).building("init")?;
        let saver = Saver::build(&mut root.new_sub_scope("checkpoint"), &vars)
            .building("checkpoint ops")?;
        let session = new_session(&scope, cfg)?;
        Ok(EvalGraph {
            cfg: cfg.clone(),
            _scope: scope,
            session,
            inputs,
            correct1,
            correct5,
            loss_sum,
            init,
            saver,
        })
    }

    /// Random initial weights (as [`TrainGraph::init`](super::TrainGraph::init) with the same seed); for tests and smoke
    /// runs. Normally [`checkpoint::restore`](crate::checkpoint::restore) is used instead.
    pub fn init(&mut self) -> Result<(), ModelError> {
        let mut args = SessionRunArgs::new();
        args.add_target(&self.init);
        self.session
            .run(&mut args)
            .map_err(|source| ModelError::Run {
                what: "init",
                source: source.into(),
            })
    }

    /// The pool this graph's image tensors come from: fill a [`Feed`](super::Feed) from it on
    /// another thread, ahead of the batch before, and `evaluate` does not copy the batch.
    pub fn feed_pool(&self) -> FeedPool {
        self.inputs.pool.clone()
    }

    /// Counts on one batch.
    pub fn evaluate(&mut self, batch: &impl AsFeed) -> Result<EvalOutput, ModelError> {
        let feed = self.inputs.feed(batch, self.cfg.num_classes)?;
        let mut args = SessionRunArgs::new();
        feed.add_to(&mut args, &self.inputs.images, &self.inputs.labels);
        let [c1, c5, ls] =
            [&self.correct1, &self.correct5, &self.loss_sum].map(|o| request(&mut args, o));
        self.session
            .run(&mut args)
            .map_err(|source| ModelError::Run {
                what: "evaluate",
                source: source.into(),
            })?;
        let c1: f32 = fetch_scalar(&mut args, c1, "fetching top1 count")?;
        let c5: f32 = fetch_scalar(&mut args, c5, "fetching top5 count")?;
        let ls: f32 = fetch_scalar(&mut args, ls, "fetching loss sum")?;
        Ok(EvalOutput {
            correct_top1: c1.round() as usize,
            correct_top5: c5.round() as usize,
            loss_sum: f64::from(ls),
            n: feed.len(),
        })
    }
}

/// Writes only what inference needs (trainables and moving statistics); reads them from a
/// training checkpoint, whose momentum slots it ignores.
impl Checkpointable for EvalGraph {
    fn write_bundle(&self, prefix: &Path, meta: &CheckpointMeta) -> Result<(), ModelError> {
        self.saver.write(&self.session, prefix, meta)
    }

    fn read_bundle(&mut self, prefix: &Path) -> Result<CheckpointMeta, ModelError> {
        self.saver.read(&self.session, prefix)
    }
}
