//! The inference graph as a TensorFlow SavedModel (TF1 layout: one MetaGraphDef tagged `serve`,
//! a `variables/` tensor bundle, `assets/`), built from Rust. The `tensorflow` crate's
//! `SavedModelBuilder` wants its own `Variable` type and names its ops `save`/`restore`, so the
//! `saved_model.pb` proto is written here with prost (field numbers from TensorFlow's
//! `saved_model.proto`, `meta_graph.proto`, `saver.proto`).
//!
//! The graph, fp32 NHWC whatever the run trained in:
//! ```text
//! serving/jpegs [N] string --MapDefun(dawnrun_preprocess)--> [N, S, S, 3] u8 (default of)
//! images [N, H, W, 3] u8 (PlaceholderWithDefault) --resnet (inference BN)--> logits [N, K]
//!   --> probabilities [N, K] f32 (softmax), classes [N, min(5, K)] i32 (top-k, best first)
//! ```
//! `dawnrun_preprocess` (one image): DecodeJpeg (channels 3) -> the evaluation window of
//! `dawnrun_data::eval_crop` for a square output, computed in f64 with the same arithmetic ->
//! Slice -> ScaleAndTranslate (triangle kernel, antialiased: bilinear widened when shrinking,
//! like the pipeline's resizer) to S x S -> round, clip to 0..255, uint8. The network then
//! normalises exactly as in training (`resnet::forward`).
//!
//! Signatures: `serving_default` feeds `serving/jpegs:0`; `images` feeds `images:0` (which
//! overrides the decoded default). Variables are saved and restored by the `saver/` ops named in
//! the SaverDef; checkpoint restore uses the usual `checkpoint/` ops.
use std::collections::BTreeMap;
use std::path::Path;

use dawnrun_data::EvalCrop;
use prost::Message;
use tensorflow::{
    ops, DataType, FunctionOptions, Operation, Output, Scope, Session, SessionOptions,
    SessionRunArgs, Shape, Status, Tensor,
};

use super::layers::Net;
use super::saver::Saver;
use super::tf::{self, Var};
use super::{resnet, BuildContext, CheckpointMeta, Checkpointable, ModelConfig, ModelError};
use super::{DataFormat, Precision};

/// Node names the signatures point at.
const JPEGS: &str = "serving/jpegs";
const IMAGES: &str = "images";
const PROBABILITIES: &str = "probabilities";
const CLASSES: &str = "classes";
const ASSET_TENSOR: &str = "assets/synsets";
/// The asset file's name under `assets/`.
pub const SYNSETS_FILE: &str = "synsets.txt";
const PREPROCESS_FN: &str = "dawnrun_preprocess";

/// What the exported graph does to an input JPEG.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExportSpec {
    /// Output side S of the square evaluation image.
    pub image_px: u32,
    /// The schedule's evaluation window.
    pub crop: EvalCrop,
}

/// The export graph with its session: restore a checkpoint into it, then [`ExportGraph::save`].
pub struct ExportGraph {
    scope: Scope,
    session: Session,
    checkpoint: Saver,
    /// `saver/filename` placeholder and `saver/control_dependency` (save) target.
    save_filename: Operation,
    save: Operation,
    top_k: i64,
    num_classes: i64,
    image_px: u32,
}

impl ExportGraph {
    /// Builds the graph for `cfg` (forced to fp32 NHWC, no device) and `spec`.
    pub fn build(cfg: &ModelConfig, spec: &ExportSpec) -> Result<ExportGraph, ModelError> {
        let cfg = ModelConfig {
            precision: Precision::Fp32,
            data_format: DataFormat::Nhwc,
            device: None,
            ..cfg.clone()
        };
        cfg.validate()?;
        if spec.image_px == 0 {
            return Err(ModelError::Config("export image size 0".into()));
        }
        let mut scope = Scope::new_root_scope();
        let preprocess = preprocess_function(spec).building("the JPEG preprocessing function")?;
        scope
            .graph_mut()
            .copy_function(&preprocess, None)
            .building("adding the preprocessing function")?;
        let images = serving_input(&mut scope, spec).building("serving input")?;
        let mut net = Net::new(&cfg, false);
        let logits = resnet::forward(&mut net, &mut scope, images.into()).building("resnet")?;
        let top_k = i64::from(cfg.num_classes.min(5));
        let (_probs, _classes) =
            outputs(&mut scope, logits, top_k as i32).building("probabilities and classes")?;
        let asset = ops::constant(
            SYNSETS_FILE.to_string(),
            &mut scope.with_op_name(ASSET_TENSOR),
        )
        .building("asset tensor")?;
        let _ = asset;
        let vars: Vec<&Var> = net.inference_vars();
        let checkpoint = Saver::build(&mut scope.new_sub_scope("checkpoint"), &vars)
            .building("checkpoint ops")?;
        let (save_filename, save) =
            model_saver(&mut scope.new_sub_scope("saver"), &vars).building("saver ops")?;
        let session =
            Session::new(&SessionOptions::new(), &scope.graph()).building("export session")?;
        Ok(ExportGraph {
            scope,
            session,
            checkpoint,
            save_filename,
            save,
            top_k,
            num_classes: i64::from(cfg.num_classes),
            image_px: spec.image_px,
        })
    }

    /// Writes the variables bundle at `<dir>/variables/variables` (the folder must exist) and
    /// returns the bytes of `saved_model.pb`. The caller writes the files and `assets/`.
    pub fn save(&self, dir: &Path) -> Result<Vec<u8>, ModelError> {
        let prefix = dir.join("variables").join("variables");
        let prefix = prefix
            .to_str()
            .ok_or_else(|| ModelError::NotUtf8(prefix.clone()))?;
        let name = Tensor::from(prefix.to_string());
        let mut args = SessionRunArgs::new();
        args.add_feed(&self.save_filename, 0, &name);
        args.add_target(&self.save);
        self.session
            .run(&mut args)
            .map_err(|source| ModelError::Run {
                what: "writing the SavedModel variables",
                source: source.into(),
            })?;
        let graph_def = self
            .scope
            .graph()
            .graph_def()
            .building("serialising the graph")?;
        Ok(saved_model_proto(
            graph_def,
            self.num_classes,
            self.top_k,
            self.image_px,
        ))
    }
}

impl Checkpointable for ExportGraph {
    fn write_bundle(&self, prefix: &Path, meta: &CheckpointMeta) -> Result<(), ModelError> {
        self.checkpoint.write(&self.session, prefix, meta)
    }

    fn read_bundle(&mut self, prefix: &Path) -> Result<CheckpointMeta, ModelError> {
        self.checkpoint.read(&self.session, prefix)
    }
}

/// `dawnrun_preprocess(jpeg: string scalar) -> [S, S, 3] u8`, in a graph of its own.
fn preprocess_function(spec: &ExportSpec) -> Result<tensorflow::Function, Status> {
    let mut s = Scope::new_root_scope();
    let jpeg = ops::Placeholder::new()
        .dtype(DataType::String)
        .shape(Shape::from(Some(vec![])))
        .build(&mut s.with_op_name("jpeg"))?;
    let img = ops::DecodeJpeg::new()
        .channels(3)
        .build(jpeg.clone(), &mut s)?; // [h, w, 3] u8
    let shape = ops::Shape::new()
        .out_type(DataType::Int32)
        .build(img.clone(), &mut s)?;
    let shape = ops::Cast::new()
        .DstT(DataType::Double)
        .build(shape, &mut s)?;
    let zero = tf::const_i32(&mut s, &[0])?;
    let two = tf::const_i32(&mut s, &[2])?;
    let hw: Output = ops::slice(shape, zero, two, &mut s)?.into(); // [h, w] f64
    let f = ops::constant(spec.crop.window_fraction(), &mut s)?;
    let half = ops::constant(0.5f64, &mut s)?;
    let (offset, size): (Output, Output) = match spec.crop {
        EvalCrop::Central { .. } => {
            // offset = floor((side - side * f) / 2), size = side - 2 * offset.
            let kept = ops::mul(hw.clone(), f, &mut s)?;
            let rest = ops::sub(hw.clone(), kept, &mut s)?;
            let off = ops::floor(ops::mul(rest, half, &mut s)?, &mut s)?;
            let two_f = ops::constant(2.0f64, &mut s)?;
            let size = ops::sub(hw, ops::mul(off.clone(), two_f, &mut s)?, &mut s)?;
            (off.into(), size.into())
        }
        EvalCrop::ShortSide { .. } => {
            // c = clamp(round(short * f), 1, short); offset = floor((side - c) / 2).
            let axis = tf::const_i32(&mut s, &[0])?;
            let short = ops::min(hw.clone(), axis, &mut s)?;
            let raw = ops::mul(short.clone(), f, &mut s)?;
            let rounded = ops::floor(ops::add_v2(raw, half.clone(), &mut s)?, &mut s)?;
            let one = ops::constant(1.0f64, &mut s)?;
            let c = ops::minimum(ops::maximum(rounded, one, &mut s)?, short, &mut s)?;
            let rest = ops::sub(hw.clone(), c.clone(), &mut s)?;
            let off = ops::floor(ops::mul(rest, half, &mut s)?, &mut s)?;
            let zeros = ops::zeros_like(hw, &mut s)?;
            let size = ops::add_v2(zeros, c, &mut s)?;
            (off.into(), size.into())
        }
    };
    let to_i32 = |s: &mut Scope, x: Output| -> Result<Output, Status> {
        Ok(ops::Cast::new().DstT(DataType::Int32).build(x, s)?.into())
    };
    let pad = ops::constant(Tensor::new(&[1, 2]).with_values(&[0i32, 1])?, &mut s)?;
    let begin = ops::pad(to_i32(&mut s, offset)?, pad.clone(), &mut s)?; // [y, x, 0]
    let minus_one = ops::constant(-1i32, &mut s)?;
    let size_i = to_i32(&mut s, size.clone())?;
    let extent = ops::pad_v2(size_i, pad, minus_one, &mut s)?; // [h, w, -1]
    let window = ops::slice(img, begin, extent, &mut s)?;
    let batch = ops::expand_dims(window, tf::const_i32(&mut s, &[0])?, &mut s)?;
    let px = spec.image_px as i32;
    let out_size = tf::const_i32(&mut s, &[px, px])?;
    let size_f = ops::Cast::new().DstT(DataType::Float).build(size, &mut s)?;
    let target = tf::const_f32(&mut s, &[px as f32, px as f32])?;
    let scale = ops::real_div(target, size_f, &mut s)?;
    let translate = tf::const_f32(&mut s, &[0.0, 0.0])?;
    let resized = ops::ScaleAndTranslate::new()
        .kernel_type("triangle")
        .antialias(true)
        .build(batch, out_size, scale, translate, &mut s)?; // [1, S, S, 3] f32
    let rounded = ops::round(resized, &mut s)?;
    let lo = ops::constant(0.0f32, &mut s)?;
    let hi = ops::constant(255.0f32, &mut s)?;
    let clipped = ops::clip_by_value(rounded, lo, hi, &mut s)?;
    let bytes = ops::Cast::new()
        .DstT(DataType::UInt8)
        .build(clipped, &mut s)?;
    let dims = tf::const_i32(&mut s, &[px, px, 3])?;
    let out = ops::reshape(bytes, dims, &mut s.with_op_name("image"))?;
    let graph = s.graph();
    graph.to_function(
        PREPROCESS_FN,
        false,
        None,
        &[jpeg.into()],
        &[out.into()],
        None::<&[&str]>,
        &FunctionOptions::new(),
        Some("one JPEG -> dawnrun's evaluation window, resized, uint8"),
    )
}

/// `serving/jpegs` -> MapDefun(preprocess) -> the default of the `images` placeholder.
fn serving_input(scope: &mut Scope, spec: &ExportSpec) -> Result<Operation, Status> {
    let jpegs = ops::Placeholder::new()
        .dtype(DataType::String)
        .shape(Shape::from(Some(vec![None])))
        .build(&mut scope.with_op_name(JPEGS))?;
    let px = i64::from(spec.image_px);
    let decoded = {
        let name = "serving/preprocess";
        let mut g = scope.graph_mut();
        let mut nd = g.new_operation("MapDefun", name)?;
        nd.add_input_list(&[jpegs.into()]);
        nd.add_input_list(&[]);
        nd.set_attr_type_list("Targuments", &[DataType::String])?;
        nd.set_attr_type_list("Tcaptured", &[])?;
        nd.set_attr_type_list("output_types", &[DataType::UInt8])?;
        nd.set_attr_shape_list("output_shapes", &[Shape::from(&[px, px, 3][..])])?;
        nd.set_attr_func_name("f", PREPROCESS_FN)?;
        nd.finish()?
    };
    ops::PlaceholderWithDefault::new()
        .dtype(DataType::UInt8)
        .shape(Shape::from(Some(vec![None, None, None, Some(3)])))
        .build(decoded, &mut scope.with_op_name(IMAGES))
}

/// `probabilities` (softmax) and `classes` (top-k indices, best first).
fn outputs(scope: &mut Scope, logits: Output, k: i32) -> Result<(Output, Output), Status> {
    let probs = ops::softmax(logits, &mut scope.with_op_name(PROBABILITIES))?;
    let kk = ops::constant(k, scope)?;
    let top = ops::top_kv2(probs.clone(), kk, scope)?;
    let classes = ops::Identity::new().build(top.output(1), &mut scope.with_op_name(CLASSES))?;
    Ok((probs.into(), classes.into()))
}

/// The SavedModel's saver: `filename` placeholder, SaveV2 of every variable then
/// `control_dependency` (the filename, after the save), and `restore_all`.
fn model_saver(scope: &mut Scope, vars: &[&Var]) -> Result<(Operation, Operation), Status> {
    let filename = ops::Placeholder::new()
        .dtype(DataType::String)
        .shape(Shape::from(Some(vec![])))
        .build(&mut scope.with_op_name("filename"))?;
    let names: Vec<String> = vars.iter().map(|v| v.name.clone()).collect();
    let names_t: Output = ops::constant(&names[..], scope)?.into();
    let slices: Output = ops::constant(&vec![String::new(); names.len()][..], scope)?.into();
    let dtypes: Vec<DataType> = vars.iter().map(|v| v.dtype).collect();
    let reads: Vec<Output> = vars.iter().map(|v| v.read.clone()).collect();
    let save = tf::save_v2(
        scope,
        filename.clone().into(),
        names_t.clone(),
        slices.clone(),
        &reads,
        &dtypes,
    )?;
    let done = ops::Identity::new().add_control_input(save).build(
        filename.clone(),
        &mut scope.with_op_name("control_dependency"),
    )?;
    let (_, restored) = tf::restore_v2(scope, filename.clone().into(), names_t, slices, &dtypes)?;
    let mut assigns = Vec::with_capacity(vars.len());
    for (var, value) in vars.iter().zip(restored) {
        assigns.push(
            ops::Assign::new()
                .validate_shape(true)
                .build(var.output(), value, scope)?,
        );
    }
    tf::group(scope, "restore_all", &assigns)?;
    Ok((filename, done))
}

// The SavedModel protos, only the fields written here.

#[derive(Clone, PartialEq, Message)]
struct SavedModelProto {
    #[prost(int64, tag = "1")]
    saved_model_schema_version: i64,
    #[prost(message, repeated, tag = "2")]
    meta_graphs: Vec<MetaGraphDef>,
}

#[derive(Clone, PartialEq, Message)]
struct MetaGraphDef {
    #[prost(message, optional, tag = "1")]
    meta_info_def: Option<MetaInfoDef>,
    /// A serialised GraphDef, embedded as is (same wire format as the message field).
    #[prost(bytes = "vec", tag = "2")]
    graph_def: Vec<u8>,
    #[prost(message, optional, tag = "3")]
    saver_def: Option<SaverDef>,
    #[prost(btree_map = "string, message", tag = "5")]
    signature_def: BTreeMap<String, SignatureDef>,
    #[prost(message, repeated, tag = "6")]
    asset_file_def: Vec<AssetFileDef>,
}

#[derive(Clone, PartialEq, Message)]
struct MetaInfoDef {
    #[prost(string, repeated, tag = "4")]
    tags: Vec<String>,
    #[prost(string, tag = "5")]
    tensorflow_version: String,
}

#[derive(Clone, PartialEq, Message)]
struct SaverDef {
    #[prost(string, tag = "1")]
    filename_tensor_name: String,
    #[prost(string, tag = "2")]
    save_tensor_name: String,
    #[prost(string, tag = "3")]
    restore_op_name: String,
    #[prost(int32, tag = "4")]
    max_to_keep: i32,
    #[prost(bool, tag = "5")]
    sharded: bool,
    #[prost(float, tag = "6")]
    keep_checkpoint_every_n_hours: f32,
    /// CheckpointFormatVersion: 2 = V2 (tensor bundle).
    #[prost(int32, tag = "7")]
    version: i32,
}

#[derive(Clone, PartialEq, Message)]
struct SignatureDef {
    #[prost(btree_map = "string, message", tag = "1")]
    inputs: BTreeMap<String, TensorInfo>,
    #[prost(btree_map = "string, message", tag = "2")]
    outputs: BTreeMap<String, TensorInfo>,
    #[prost(string, tag = "3")]
    method_name: String,
}

#[derive(Clone, PartialEq, Message)]
struct TensorInfo {
    #[prost(string, tag = "1")]
    name: String,
    /// DataType enum: 1 float, 3 int32, 4 uint8, 7 string.
    #[prost(int32, tag = "2")]
    dtype: i32,
    #[prost(message, optional, tag = "3")]
    tensor_shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "2")]
    dim: Vec<Dim>,
}

#[derive(Clone, PartialEq, Message)]
struct Dim {
    #[prost(int64, tag = "1")]
    size: i64,
}

#[derive(Clone, PartialEq, Message)]
struct AssetFileDef {
    #[prost(message, optional, tag = "1")]
    tensor_info: Option<TensorInfo>,
    #[prost(string, tag = "2")]
    filename: String,
}

const DT_FLOAT: i32 = 1;
const DT_INT32: i32 = 3;
const DT_UINT8: i32 = 4;
const DT_STRING: i32 = 7;

fn info(node: &str, dtype: i32, dims: &[i64]) -> TensorInfo {
    TensorInfo {
        name: format!("{node}:0"),
        dtype,
        tensor_shape: Some(TensorShapeProto {
            dim: dims.iter().map(|&size| Dim { size }).collect(),
        }),
    }
}

fn saved_model_proto(graph_def: Vec<u8>, classes: i64, top_k: i64, _px: u32) -> Vec<u8> {
    let outputs: BTreeMap<String, TensorInfo> = [
        (PROBABILITIES, info(PROBABILITIES, DT_FLOAT, &[-1, classes])),
        (CLASSES, info(CLASSES, DT_INT32, &[-1, top_k])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let signature = |input: &str, tensor: TensorInfo| SignatureDef {
        inputs: [(input.to_string(), tensor)].into_iter().collect(),
        outputs: outputs.clone(),
        method_name: "tensorflow/serving/predict".to_string(),
    };
    let mut signature_def = BTreeMap::new();
    signature_def.insert(
        "serving_default".to_string(),
        signature("jpegs", info(JPEGS, DT_STRING, &[-1])),
    );
    signature_def.insert(
        "images".to_string(),
        signature("images", info(IMAGES, DT_UINT8, &[-1, -1, -1, 3])),
    );
    let meta = MetaGraphDef {
        meta_info_def: Some(MetaInfoDef {
            tags: vec!["serve".to_string()],
            tensorflow_version: tensorflow::version().unwrap_or_default(),
        }),
        graph_def,
        saver_def: Some(SaverDef {
            filename_tensor_name: "saver/filename:0".to_string(),
            save_tensor_name: "saver/control_dependency:0".to_string(),
            restore_op_name: "saver/restore_all".to_string(),
            max_to_keep: 5,
            sharded: false,
            keep_checkpoint_every_n_hours: 10000.0,
            version: 2,
        }),
        signature_def,
        asset_file_def: vec![AssetFileDef {
            tensor_info: Some(info(ASSET_TENSOR, DT_STRING, &[])),
            filename: SYNSETS_FILE.to_string(),
        }],
    };
    SavedModelProto {
        saved_model_schema_version: 1,
        meta_graphs: vec![meta],
    }
    .encode_to_vec()
}
