//! The SaveV2 / RestoreV2 ops for one graph's state variables, built once with the graph
//! (under the node scope `checkpoint/`), and the atomic file dance around them (module doc of
//! `checkpoint`).
use super::{data_path, index_path, prefix_for, CheckpointMeta, Error};
use crate::model::tf::{self, Var};
use std::path::{Path, PathBuf};
use tensorflow::{
    ops, DataType, Operation, Output, Scope, Session, SessionRunArgs, Status, Tensor,
};

/// Checkpoint keys of the progress scalars.
pub(crate) const STEP_KEY: &str = "global_step";
pub(crate) const EPOCH_KEY: &str = "dawnrun/epoch";
pub(crate) const SECONDS_KEY: &str = "dawnrun/train_seconds";

/// Handles of the save and restore ops of one graph.
pub(crate) struct Saver {
    save_prefix: Operation,
    step: Operation,
    epoch: Operation,
    seconds: Operation,
    save: Operation,
    restore_prefix: Operation,
    /// Runs every variable's Assign from RestoreV2.
    restore: Operation,
    /// RestoreV2 outputs of step (i64), epoch (f64), seconds (f64).
    restored_meta: [Output; 3],
}

impl Saver {
    /// Builds the ops into `scope` (give it `root.new_sub_scope("checkpoint")`, on the CPU).
    /// `vars` are saved under their node names, in order, then the three progress scalars.
    pub(crate) fn build(scope: &mut Scope, vars: &[&Var]) -> Result<Saver, Status> {
        let mut names: Vec<String> = vars.iter().map(|v| v.name.clone()).collect();
        names.extend([STEP_KEY, EPOCH_KEY, SECONDS_KEY].map(String::from));
        let mut dtypes: Vec<DataType> = vars.iter().map(|v| v.dtype).collect();
        dtypes.extend([DataType::Int64, DataType::Double, DataType::Double]);

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
        let names_t: Output = ops::constant(&names[..], scope)?.into();
        let slices: Output = ops::constant(&vec![String::new(); names.len()][..], scope)?.into();

        let mut tensors: Vec<Output> = vars.iter().map(|v| v.read.clone()).collect();
        tensors.extend([step.clone(), epoch.clone(), seconds.clone()].map(Output::from));
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
            save,
            restore_prefix,
            restore,
            restored_meta: [
                restored[n].clone(),
                restored[n + 1].clone(),
                restored[n + 2].clone(),
            ],
        })
    }

    /// Writes `<dir>/ckpt-<meta.step>` atomically; returns the prefix.
    pub(crate) fn save(
        &self,
        session: &Session,
        dir: &Path,
        meta: &CheckpointMeta,
    ) -> Result<PathBuf, Error> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            what: "creating checkpoint directory",
            source,
        })?;
        let prefix = prefix_for(dir, meta.step);
        let tmp = dir.join(format!(".ckpt-{}.tmp{}", meta.step, std::process::id()));
        let tmp_str = utf8(&tmp)?;

        let prefix_t = Tensor::from(tmp_str.to_string());
        let step_t = Tensor::from(meta.step as i64);
        let epoch_t = Tensor::from(meta.epoch);
        let seconds_t = Tensor::from(meta.train_seconds);
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.save_prefix, 0, &prefix_t);
        args.add_feed(&self.step, 0, &step_t);
        args.add_feed(&self.epoch, 0, &epoch_t);
        args.add_feed(&self.seconds, 0, &seconds_t);
        args.add_target(&self.save);
        session.run(&mut args).map_err(|source| Error::Save {
            prefix: tmp.clone(),
            source,
        })?;

        // Data first, index last: a visible `.index` means the pair is complete.
        for (from, to) in [
            (data_path(&tmp), data_path(&prefix)),
            (index_path(&tmp), index_path(&prefix)),
        ] {
            sync_file(&from)?;
            std::fs::rename(&from, &to).map_err(|source| Error::Io {
                path: from.clone(),
                what: "renaming checkpoint file into place",
                source,
            })?;
        }
        sync_dir(dir);
        Ok(prefix)
    }

    /// Restores every variable of this graph from `prefix` (all must be present with the same
    /// shapes) and returns the progress scalars.
    pub(crate) fn restore(
        &self,
        session: &Session,
        prefix: &Path,
    ) -> Result<CheckpointMeta, Error> {
        for path in [index_path(prefix), data_path(prefix)] {
            if !path.is_file() {
                return Err(Error::Missing { path });
            }
        }
        let prefix_t = Tensor::from(utf8(prefix)?.to_string());
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.restore_prefix, 0, &prefix_t);
        args.add_target(&self.restore);
        let [s, e, t] = &self.restored_meta;
        let step = args.request_fetch(&s.operation, s.index);
        let epoch = args.request_fetch(&e.operation, e.index);
        let seconds = args.request_fetch(&t.operation, t.index);
        let failed = |source: Status| {
            let (prefix, data) = (prefix.to_path_buf(), data_path(prefix));
            // TF says only "Read less bytes than requested" and names no file.
            if source.code() == tensorflow::Code::OutOfRange {
                Error::Truncated {
                    prefix,
                    data,
                    source,
                }
            } else {
                Error::Restore {
                    prefix,
                    data,
                    source,
                }
            }
        };
        session.run(&mut args).map_err(failed)?;
        let step = args.fetch::<i64>(step).map_err(failed)?[0];
        let epoch = args.fetch::<f64>(epoch).map_err(failed)?[0];
        let train_seconds = args.fetch::<f64>(seconds).map_err(failed)?[0];
        Ok(CheckpointMeta {
            step: step.max(0) as u64,
            epoch,
            train_seconds,
        })
    }
}

fn utf8(path: &Path) -> Result<&str, Error> {
    path.to_str().ok_or_else(|| Error::NotUtf8 {
        path: path.to_path_buf(),
    })
}

fn sync_file(path: &Path) -> Result<(), Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        what: "flushing checkpoint file",
        source,
    };
    std::fs::File::open(path)
        .map_err(io)?
        .sync_all()
        .map_err(io)
}

/// Best effort: makes the renames durable where the platform allows syncing a directory.
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
