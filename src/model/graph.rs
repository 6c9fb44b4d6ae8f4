//! What both graphs ([`TrainGraph`](super::TrainGraph) in `train_graph.rs`,
//! [`EvalGraph`](super::EvalGraph) in `eval_graph.rs`) build the same way: the batch
//! placeholders, the device scope, and the session with its config.
use super::feed::{AsFeed, Fed, FeedPool};
use super::{BuildContext, ModelConfig, ModelError};
use tensorflow::{ops, DataType, Operation, Scope, Session, SessionOptions, Shape, Status};

/// Placeholders shared by both graphs: the batch.
pub(super) struct BatchInputs {
    pub(super) images: Operation, // [N, H, W, 3] u8
    pub(super) labels: Operation, // [N] i32
    /// The image tensors fed to them, reused.
    pub(super) pool: FeedPool,
}

impl BatchInputs {
    pub(super) fn build(scope: &mut Scope) -> Result<BatchInputs, Status> {
        let images = ops::Placeholder::new()
            .dtype(DataType::UInt8)
            .shape(Shape::from(Some(vec![None, None, None, Some(3)])))
            .build(&mut scope.with_op_name("images"))?;
        let labels = ops::Placeholder::new()
            .dtype(DataType::Int32)
            .shape(Shape::from(Some(vec![None])))
            .build(&mut scope.with_op_name("labels"))?;
        Ok(BatchInputs {
            images,
            labels,
            pool: FeedPool::default(),
        })
    }

    /// `batch` as this graph's input tensors.
    pub(super) fn feed<'b>(
        &self,
        batch: &'b impl AsFeed,
        num_classes: u32,
    ) -> Result<Fed<'b>, ModelError> {
        batch.as_feed(&self.pool, num_classes)
    }
}

/// The serialised `ConfigProto`: `allow_soft_placement` (field 7) so ops without a kernel on
/// the pinned device (InTopKV2, string ops on a GPU) fall back to the CPU, and
/// `inter_op_parallelism_threads` (field 5) when set.
fn session_config(cfg: &ModelConfig) -> Vec<u8> {
    use prost::encoding::{encode_key, encode_varint, WireType};
    let mut bytes = Vec::new();
    encode_key(7, WireType::Varint, &mut bytes);
    encode_varint(1, &mut bytes);
    if cfg.inter_op_threads > 0 {
        encode_key(5, WireType::Varint, &mut bytes);
        encode_varint(u64::from(cfg.inter_op_threads), &mut bytes);
    }
    bytes
}

pub(super) fn new_session(scope: &Scope, cfg: &ModelConfig) -> Result<Session, ModelError> {
    let mut options = SessionOptions::new();
    options
        .set_config(&session_config(cfg))
        .building("session options")?;
    Session::new(&options, &scope.graph()).building("session")
}

/// The scope model ops are built in: the root, pinned to `cfg.device` if given.
pub(super) fn device_scope(root: &Scope, cfg: &ModelConfig) -> Scope {
    // An empty device string is "no constraint" (Scope is not Clone; this makes a copy).
    root.with_device(cfg.device.as_deref().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_config_is_the_config_proto_tensorflow_expects() {
        let mut cfg = ModelConfig::new(18, 10);
        assert_eq!(session_config(&cfg), [0x38, 0x01]);
        cfg.inter_op_threads = 300;
        // Field 5 varint 300 = 0xac 0x02.
        assert_eq!(session_config(&cfg), [0x38, 0x01, 0x28, 0xac, 0x02]);
    }
}
