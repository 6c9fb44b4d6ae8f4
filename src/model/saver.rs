//! The SaveV2 / RestoreV2 ops for one graph's state variables, built once with the graph under
//! the node scope `checkpoint/`, never `save`: the `tensorflow` crate's `CheckpointMaker` and
//! `SavedModelBuilder` both claim that name. Which files exist and when they count as complete
//! is `checkpoint`'s business; this only runs the ops on a given prefix.
use super::rewrite::Rebind;
use super::tf::{self, Var};
use super::{CheckpointMeta, ModelError};
use std::path::Path;
use tensorflow::{
    ops, DataType, Operation, Output, Scope, Session, SessionRunArgs, Status, Tensor,
};

/// Checkpoint keys of the progress scalars.
pub(crate) const STEP_KEY: &str = "global_step";
pub(crate) const EPOCH_KEY: &str = "dawnrun/epoch";
pub(crate) const SECONDS_KEY: &str = "dawnrun/train_seconds";
pub(crate) const SCALE_KEY: &str = "dawnrun/loss_scale";
pub(crate) const GOOD_STEPS_KEY: &str = "dawnrun/loss_scale_good_steps";

/// Handles of the save and restore ops of one graph.
pub(crate) struct Saver {
    save_prefix: Operation,
    step: Operation,
    epoch: Operation,
    seconds: Operation,
    scale: Operation,
    good_steps: Operation,
    save: Operation,
    restore_prefix: Operation,
    /// Runs every variable's Assign from RestoreV2.
    restore: Operation,
    /// RestoreV2 outputs of step (i64), epoch (f64), seconds (f64), loss scale (f64), good
    /// steps (i64).
    restored_meta: [Output; 5],
}

impl Saver {
    /// Builds the ops into `scope` (give it `root.new_sub_scope("checkpoint")`, on the CPU).
    /// `vars` are saved under their node names, in order, then the three progress scalars.
    pub(crate) fn build(scope: &mut Scope, vars: &[&Var]) -> Result<Saver, Status> {
        let mut names: Vec<String> = vars.iter().map(|v| v.name.clone()).collect();
        let keys = [STEP_KEY, EPOCH_KEY, SECONDS_KEY, SCALE_KEY, GOOD_STEPS_KEY];
        names.extend(keys.map(String::from));
        let mut dtypes: Vec<DataType> = vars.iter().map(|v| v.dtype).collect();
        dtypes.extend([
            DataType::Int64,
            DataType::Double,
            DataType::Double,
            DataType::Double,
            DataType::Int64,
        ]);

        let string_ph = |s: &mut Scope, name: &str| {
            ops::Placeholder::new()
                .dtype(DataType::String)
                .shape(tensorflow::Shape::from(Some(vec![])))
                .build(&mut s.with_op_name(name))
        };
        let scalar_ph = |s: &mut Scope, name: &str, dt: DataType| {
            ops::Placeholder::new()
                .dtype(dt)
                .shape(tensorflow::Shape::from(Some(vec![])))
                .build(&mut s.with_op_name(name))
        };
        let save_prefix = string_ph(scope, "save_prefix")?;
        let step = scalar_ph(scope, "step", DataType::Int64)?;
        let epoch = scalar_ph(scope, "epoch", DataType::Double)?;
        let seconds = scalar_ph(scope, "train_seconds", DataType::Double)?;
        let scale = scalar_ph(scope, "loss_scale", DataType::Double)?;
        let good_steps = scalar_ph(scope, "loss_scale_good_steps", DataType::Int64)?;
        let names_t: Output = ops::constant(&names[..], scope)?.into();
        let slices: Output = ops::constant(&vec![String::new(); names.len()][..], scope)?.into();

        let mut tensors: Vec<Output> = vars.iter().map(|v| v.read.clone()).collect();
        tensors.extend(
            [&step, &epoch, &seconds, &scale, &good_steps].map(|o| Output::from(o.clone())),
        );
        let save = tf::save_v2(
            scope,
            save_prefix.clone().into(),
            names_t.clone(),
            slices.clone(),
            &tensors,
            &dtypes,
        )?;

        let restore_prefix = string_ph(scope, "restore_prefix")?;
        let (_, restored) = tf::restore_v2(
            scope,
            restore_prefix.clone().into(),
            names_t,
            slices,
            &dtypes,
        )?;
        let mut assigns = Vec::with_capacity(vars.len());
        for (var, value) in vars.iter().zip(&restored) {
            assigns.push(ops::Assign::new().validate_shape(true).build(
                var.output(),
                value.clone(),
                scope,
            )?);
        }
        let restore = tf::group(scope, "restore", &assigns)?;
        let n = vars.len();
        Ok(Saver {
            save_prefix,
            step,
            epoch,
            seconds,
            scale,
            good_steps,
            save,
            restore_prefix,
            restore,
            restored_meta: [
                restored[n].clone(),
                restored[n + 1].clone(),
                restored[n + 2].clone(),
                restored[n + 3].clone(),
                restored[n + 4].clone(),
            ],
        })
    }

    /// The same handles in the graph `to` looks in.
    pub(crate) fn rebind(&self, to: &Rebind) -> Result<Saver, Status> {
        let m = &self.restored_meta;
        Ok(Saver {
            save_prefix: to.op(&self.save_prefix)?,
            step: to.op(&self.step)?,
            epoch: to.op(&self.epoch)?,
            seconds: to.op(&self.seconds)?,
            scale: to.op(&self.scale)?,
            good_steps: to.op(&self.good_steps)?,
            save: to.op(&self.save)?,
            restore_prefix: to.op(&self.restore_prefix)?,
            restore: to.op(&self.restore)?,
            restored_meta: [
                to.out(&m[0])?,
                to.out(&m[1])?,
                to.out(&m[2])?,
                to.out(&m[3])?,
                to.out(&m[4])?,
            ],
        })
    }

    /// Writes every variable and `meta` as a tensor bundle at `prefix` (`<prefix>.index` and
    /// `<prefix>.data-00000-of-00001`). Not atomic by itself: `checkpoint::save` gives it a
    /// temporary prefix and renames the files into place.
    pub(crate) fn write(
        &self,
        session: &Session,
        prefix: &Path,
        meta: &CheckpointMeta,
    ) -> Result<(), ModelError> {
        let prefix_t = Tensor::from(utf8(prefix)?.to_string());
        let step_t = Tensor::from(meta.step as i64);
        let epoch_t = Tensor::from(meta.epoch);
        let seconds_t = Tensor::from(meta.train_seconds);
        let scale_t = Tensor::from(meta.loss_scale);
        let good_t = Tensor::from(meta.loss_scale_good_steps as i64);
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.save_prefix, 0, &prefix_t);
        args.add_feed(&self.step, 0, &step_t);
        args.add_feed(&self.epoch, 0, &epoch_t);
        args.add_feed(&self.seconds, 0, &seconds_t);
        args.add_feed(&self.scale, 0, &scale_t);
        args.add_feed(&self.good_steps, 0, &good_t);
        args.add_target(&self.save);
        session.run(&mut args).map_err(|source| ModelError::Run {
            what: "writing a checkpoint",
            source: source.into(),
        })
    }

    /// Restores every variable of this graph from the bundle at `prefix` (all must be present
    /// with the same shapes) and returns the progress scalars.
    pub(crate) fn read(
        &self,
        session: &Session,
        prefix: &Path,
    ) -> Result<CheckpointMeta, ModelError> {
        let prefix_t = Tensor::from(utf8(prefix)?.to_string());
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.restore_prefix, 0, &prefix_t);
        args.add_target(&self.restore);
        let [s, e, t, sc, g] = &self.restored_meta;
        let step = args.request_fetch(&s.operation, s.index);
        let epoch = args.request_fetch(&e.operation, e.index);
        let seconds = args.request_fetch(&t.operation, t.index);
        let scale = args.request_fetch(&sc.operation, sc.index);
        let good_steps = args.request_fetch(&g.operation, g.index);
        let failed = |source: Status| {
            // TF says only "Read less bytes than requested": the caller names the file.
            if source.code() == tensorflow::Code::OutOfRange {
                ModelError::BundleTruncated {
                    source: source.into(),
                }
            } else {
                ModelError::Run {
                    what: "restoring a checkpoint",
                    source: source.into(),
                }
            }
        };
        session.run(&mut args).map_err(failed)?;
        // RestoreV2 checks each value's type, not its shape: a foreign checkpoint may hold an
        // empty one.
        fn scalar<T: tensorflow::TensorType + Copy>(
            args: &mut SessionRunArgs,
            token: tensorflow::FetchToken,
            name: &'static str,
            failed: &impl Fn(Status) -> ModelError,
        ) -> Result<T, ModelError> {
            let t = args.fetch::<T>(token).map_err(failed)?;
            t.first().copied().ok_or(ModelError::Input {
                what: "restoring a checkpoint",
                detail: format!("{name} holds no value"),
            })
        }
        let step: i64 = scalar(&mut args, step, "global_step", &failed)?;
        let epoch: f64 = scalar(&mut args, epoch, "the epoch", &failed)?;
        let train_seconds: f64 = scalar(&mut args, seconds, "the training seconds", &failed)?;
        let loss_scale: f64 = scalar(&mut args, scale, "the loss scale", &failed)?;
        let good_steps: i64 = scalar(
            &mut args,
            good_steps,
            "the loss scale's good steps",
            &failed,
        )?;
        Ok(CheckpointMeta {
            step: step.max(0) as u64,
            epoch,
            train_seconds,
            loss_scale,
            loss_scale_good_steps: good_steps.max(0) as u64,
        })
    }
}

fn utf8(path: &Path) -> Result<&str, ModelError> {
    path.to_str()
        .ok_or_else(|| ModelError::NotUtf8(path.to_path_buf()))
}
