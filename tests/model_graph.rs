//! The TensorFlow training graph on this CPU: parameter counts, node names, learning, loss scaling
//! and state transfer. TF tests take the cores in turn (`model_support::cores`).
mod model_support;

use dawnrun::model::{
    cpu_runs_bf16, DataFormat, EvalGraph, Gradients, ModelConfig, Precision, StepMetrics,
    TrainGraph,
};
use model_support::{blobs, cores, Batch, Rng};

/// A small graph with loss scaling built in: most tests here feed scales other than 1.
fn small(precision: Precision) -> ModelConfig {
    let mut cfg = ModelConfig::new(18, 10);
    cfg.precision = precision;
    cfg.weight_decay = 5e-5;
    cfg.seed = 7;
    cfg.loss_scaling = true;
    cfg
}

/// The precisions of `all` that this machine can run a step in (bf16 wants AVX-512 on a CPU).
fn runnable<const N: usize>(all: [Precision; N]) -> Vec<Precision> {
    all.into_iter()
        .filter(|&p| p != Precision::Bf16 || cpu_runs_bf16())
        .collect()
}

fn built(cfg: &ModelConfig) -> TrainGraph {
    let mut g = TrainGraph::build(cfg).unwrap();
    g.init().unwrap();
    g
}

#[test]
fn resnet50_has_25_557_032_params_and_runs_a_step() {
    let _cores = cores();
    let cfg = ModelConfig::new(50, 1000);
    let mut g = built(&cfg);
    // torchvision's / the reference ResNet-50 v1.5: convs without bias, BN gamma+beta, fc + bias.
    assert_eq!(g.num_params(), 25_557_032);
    assert_eq!(
        g.trainable().iter().map(|v| v.len).sum::<usize>(),
        g.num_params()
    );
    // 53 convs + 53 BNs (x2) + fc kernel + bias.
    assert_eq!(g.trainable().len(), 53 + 53 * 2 + 2);
    let batch = blobs(2, 64, 10, &mut Rng::new(1));
    let before = g.state_to_host().unwrap();
    let out = g.gradients(&batch.view(), 1.0).unwrap();
    assert_eq!(out.grads.len(), g.num_params());
    assert!(out.grads.iter().all(|x| x.is_finite()));
    assert!(out.metrics.loss.is_finite() && out.metrics.total_loss > out.metrics.loss);
    g.apply(&out.grads, 0.1).unwrap();
    let after = g.state_to_host().unwrap();
    assert_eq!(after.len(), g.state_len());
    let p = g.num_params();
    assert!(before[..p] != after[..p], "apply must change the weights");
}

#[test]
fn node_names_are_pinned() {
    let _cores = cores();
    let g = TrainGraph::build(&ModelConfig::new(50, 1000)).unwrap();
    let names: Vec<&str> = g.trainable().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        &names[..6],
        [
            "resnet/stem/conv/kernel",
            "resnet/stem/bn/gamma",
            "resnet/stem/bn/beta",
            "resnet/stage1/block0/shortcut/conv/kernel",
            "resnet/stage1/block0/shortcut/bn/gamma",
            "resnet/stage1/block0/shortcut/bn/beta",
        ]
    );
    assert_eq!(
        &names[names.len() - 2..],
        ["resnet/fc/kernel", "resnet/fc/bias"]
    );
    let state: Vec<&str> = g.state().iter().map(|v| v.name.as_str()).collect();
    for name in [
        "resnet/stage1/block0/conv1/kernel",
        "resnet/stage2/block0/conv2/kernel",
        "resnet/stage4/block2/bn3/gamma",
        "resnet/stage3/block5/conv3/kernel",
        "resnet/stem/bn/moving_mean",
        "resnet/stage4/block2/bn3/moving_variance",
        "resnet/stem/conv/kernel/Momentum",
        "resnet/fc/bias/Momentum",
    ] {
        assert!(state.contains(&name), "missing {name}");
    }
    let shape = |n: &str| {
        g.state()
            .iter()
            .find(|v| v.name == n)
            .unwrap()
            .shape
            .clone()
    };
    assert_eq!(shape("resnet/stem/conv/kernel"), [7, 7, 3, 64]);
    // v1.5: the stride-2 3x3 sits in conv2 of the bottleneck.
    assert_eq!(shape("resnet/stage2/block0/conv2/kernel"), [3, 3, 128, 128]);
    assert_eq!(shape("resnet/fc/kernel"), [2048, 1000]);
    // Order: trainables, then moving statistics, then slots.
    let p = g.trainable().len();
    assert_eq!(state[..p], names[..]);
    assert_eq!(state[p], "resnet/stem/bn/moving_mean");
    assert_eq!(*state.last().unwrap(), "resnet/fc/bias/Momentum");
}

#[test]
fn last_bn_gamma_of_each_block_starts_at_zero_only_when_asked() {
    let _cores = cores();
    for zero in [true, false] {
        let mut cfg = small(Precision::Fp32);
        cfg.zero_init_last_bn_gamma = zero;
        let mut g = built(&cfg);
        let state = g.state_to_host().unwrap();
        let mut offset = 0;
        let mut last_bn = 0;
        for v in g.state() {
            let values = &state[offset..offset + v.len];
            offset += v.len;
            if v.name.ends_with("bn2/gamma") {
                last_bn += 1;
                assert!(
                    values.iter().all(|&x| x == if zero { 0.0 } else { 1.0 }),
                    "{}",
                    v.name
                );
            } else if v.name.ends_with("bn1/gamma") {
                assert!(values.iter().all(|&x| x == 1.0), "{}", v.name);
            }
        }
        assert_eq!(last_bn, 8, "resnet-18 has 8 basic blocks");
    }
}

#[test]
fn init_is_deterministic_per_seed() {
    let _cores = cores();
    let a = built(&small(Precision::Fp32)).state_to_host().unwrap();
    let b = built(&small(Precision::Fp32)).state_to_host().unwrap();
    let mut other = small(Precision::Fp32);
    other.seed = 8;
    let c = built(&other).state_to_host().unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn loss_scale_leaves_returned_gradients_unscaled() {
    let _cores = cores();
    for precision in runnable([Precision::Fp32, Precision::Bf16]) {
        let mut g = built(&small(precision));
        let batch = blobs(8, 32, 10, &mut Rng::new(3));
        let one = g.gradients(&batch.view(), 1.0).unwrap();
        let big = g.gradients(&batch.view(), 256.0).unwrap();
        let odd = g.gradients(&batch.view(), 1000.0).unwrap();
        assert_eq!(
            one.metrics.loss, big.metrics.loss,
            "{precision:?}: the loss is reported unscaled"
        );
        let d = max_rel_diff(&one.grads, &big.grads);
        assert!(d < 1e-5, "{precision:?}: scale 256 differs by {d}");
        let d = max_rel_diff(&one.grads, &odd.grads);
        assert!(d < 2e-2, "{precision:?}: scale 1000 differs by {d}");
        assert!(one.grads.iter().any(|&x| x != 0.0));
    }
}

#[test]
fn state_round_trip_gives_identical_outputs() {
    let _cores = cores();
    let cfg = small(Precision::Fp32);
    let mut a = built(&cfg);
    let mut rng = Rng::new(5);
    for _ in 0..2 {
        let out = a
            .gradients(&blobs(4, 32, 10, &mut rng).view(), 1.0)
            .unwrap();
        a.apply(&out.grads, 0.05).unwrap();
    }
    let state = a.state_to_host().unwrap();
    let mut other = cfg.clone();
    other.seed = 99;
    let mut b = built(&other);
    assert_ne!(b.state_to_host().unwrap(), state);
    b.state_from_host(&state).unwrap();
    assert_eq!(b.state_to_host().unwrap(), state);
    let batch = blobs(4, 32, 10, &mut rng);
    let (oa, ob) = (
        a.gradients(&batch.view(), 1.0).unwrap(),
        b.gradients(&batch.view(), 1.0).unwrap(),
    );
    assert_eq!(
        (oa.metrics.loss, oa.metrics.total_loss, oa.metrics.top1),
        (ob.metrics.loss, ob.metrics.total_loss, ob.metrics.top1)
    );
    assert_eq!(oa.grads[..], ob.grads[..]);
    a.apply(&oa.grads, 0.05).unwrap();
    b.apply(&ob.grads, 0.05).unwrap();
    assert_eq!(a.state_to_host().unwrap(), b.state_to_host().unwrap());
    assert!(b
        .state_from_host(&state[1..])
        .unwrap_err()
        .to_string()
        .contains("state"));
}

/// A graph built without loss scaling (what a static scale of 1 builds) gives, bit for bit, the
/// gradients, metrics and updated state of one built with it and fed 1, and refuses any other
/// scale instead of ignoring it.
#[test]
fn a_graph_without_loss_scaling_is_the_same_math_at_scale_one() {
    let _cores = cores();
    for precision in runnable([Precision::Fp32, Precision::Bf16]) {
        let scaled = small(precision);
        let plain = ModelConfig {
            loss_scaling: false,
            ..scaled.clone()
        };
        let (mut a, mut b) = (built(&scaled), built(&plain));
        // The multiplications are really gone, not just fed a 1.
        let has_unscale = |g: &TrainGraph| {
            let (def, _) = g.graph_def().unwrap();
            def.windows(8).any(|w| w == b"unscale/")
        };
        assert!(has_unscale(&a) && !has_unscale(&b), "{precision:?}");
        let mut rng = Rng::new(5);
        for step in 0..2 {
            let batch = blobs(4, 32, 10, &mut rng);
            let (ga, gb) = (
                a.gradients(&batch.view(), 1.0).unwrap(),
                b.gradients(&batch.view(), 1.0).unwrap(),
            );
            assert_eq!(ga.metrics, gb.metrics, "{precision:?} step {step}");
            assert_eq!(ga.grads[..], gb.grads[..], "{precision:?} step {step}");
            let (fa, fb) = (
                a.fused_step(&batch.view(), 1.0, 0.05).unwrap(),
                b.fused_step(&batch.view(), 1.0, 0.05).unwrap(),
            );
            assert!(fa.applied && fb.applied);
            assert_eq!(fa.metrics, fb.metrics, "{precision:?} step {step}");
            assert_eq!(
                a.state_to_host().unwrap(),
                b.state_to_host().unwrap(),
                "{precision:?} step {step}"
            );
        }
        let batch = blobs(4, 32, 10, &mut rng);
        for err in [
            b.gradients(&batch.view(), 256.0).map(|_| ()).unwrap_err(),
            b.fused_step(&batch.view(), 256.0, 0.05)
                .map(|_| ())
                .unwrap_err(),
        ] {
            let err = err.to_string();
            assert!(
                err.contains("loss scale") && err.contains("256"),
                "{precision:?}: {err}"
            );
        }
    }
}

/// Trains on a fixed synthetic set; returns (mean loss of the first 10 steps, of the last 20,
/// mean top-1 of the last 20).
fn train_blobs(precision: Precision, steps: usize) -> (f32, f32, f32) {
    let mut cfg = small(precision);
    cfg.nesterov = true;
    let mut g = built(&cfg);
    let mut rng = Rng::new(2024);
    let data: Vec<Batch> = (0..16).map(|_| blobs(16, 32, 10, &mut rng)).collect();
    // The one-run step a single-rank trainer takes.
    let mut outs: Vec<StepMetrics> = Vec::new();
    for step in 0..steps {
        let lr = 0.02 + 0.08 * (step as f32 / 20.0).min(1.0); // short warm-up
        let out = g
            .fused_step(&data[step % data.len()].view(), 128.0, lr)
            .unwrap();
        assert!(out.applied, "{precision:?} step {step}: non-finite");
        outs.push(out.metrics);
    }
    let mean = |s: &[StepMetrics], f: fn(&StepMetrics) -> f32| {
        s.iter().map(f).sum::<f32>() / s.len() as f32
    };
    let tail = &outs[steps - 20..];
    let result = (
        mean(&outs[..10], |o| o.loss),
        mean(tail, |o| o.loss),
        mean(tail, |o| o.top1),
    );
    eprintln!(
        "{precision:?}: loss {} -> {}, train top-1 {}",
        result.0, result.1, result.2
    );
    result
}

#[test]
fn resnet18_fp32_learns_synthetic_blobs() {
    let _cores = cores();
    let (first, last, top1) = train_blobs(Precision::Fp32, 120);
    assert!(last < 0.5 * first, "fp32 loss {first} -> {last}");
    assert!(top1 > 0.5, "fp32 train top-1 {top1} (chance 0.1)");
}

#[test]
fn resnet18_bf16_learns_synthetic_blobs() {
    let _cores = cores();
    if !cpu_runs_bf16() {
        // `trainer`'s refusal on such a CPU is tested in tests/train.rs.
        eprintln!("skipped: this CPU has no AVX-512, so TensorFlow has no bf16 kernels for it");
        return;
    }
    let (first, last, top1) = train_blobs(Precision::Bf16, 120);
    assert!(last < 0.5 * first, "bf16 loss {first} -> {last}");
    assert!(top1 > 0.5, "bf16 train top-1 {top1} (chance 0.1)");
}

#[test]
fn fp16_and_nchw_graphs_build() {
    let _cores = cores();
    for (precision, format) in [
        (Precision::Fp16, DataFormat::Nhwc),
        (Precision::Fp32, DataFormat::Nchw),
        (Precision::Fp16, DataFormat::Nchw),
    ] {
        let mut cfg = ModelConfig::new(50, 1000);
        cfg.precision = precision;
        cfg.data_format = format;
        let g = TrainGraph::build(&cfg).unwrap();
        assert_eq!(g.num_params(), 25_557_032);
        EvalGraph::build(&cfg).unwrap();
    }
}

/// The one-run step is the two-run step: the same metrics and, bit for bit, the same state
/// afterwards; and with a non-finite loss it leaves every weight and momentum slot untouched.
#[test]
fn the_fused_step_equals_gradients_then_apply_and_skips_when_not_finite() {
    let _cores = cores();
    let cfg = small(Precision::Fp32);
    let (mut a, mut b) = (built(&cfg), built(&cfg));
    let mut rng = Rng::new(11);
    for step in 0..3 {
        let batch = blobs(4, 32, 10, &mut rng);
        let two = a.gradients(&batch.view(), 8.0).unwrap();
        a.apply(&two.grads, 0.05).unwrap();
        let one = b.fused_step(&batch.view(), 8.0, 0.05).unwrap();
        assert!(one.applied, "step {step}");
        assert_eq!(one.metrics, two.metrics, "step {step}");
        assert_eq!(
            a.state_to_host().unwrap(),
            b.state_to_host().unwrap(),
            "step {step}"
        );
    }
    let before = b.state_to_host().unwrap();
    let batch = blobs(4, 32, 10, &mut rng);
    let out = b.fused_step(&batch.view(), f32::INFINITY, 0.05).unwrap();
    assert!(!out.applied);
    let after = b.state_to_host().unwrap();
    let p = b.num_params();
    // Weights (the first P floats) and the momentum slots (the last P) are unchanged; the
    // batch-norm moving statistics in between did take this batch.
    assert_eq!(before[..p], after[..p]);
    assert_eq!(before[before.len() - p..], after[after.len() - p..]);
}

/// The check run before each checkpoint sees one non-finite float anywhere in the state: a
/// weight, a batch-norm moving statistic, a momentum slot.
#[test]
fn the_state_check_finds_a_non_finite_value_in_any_kind_of_state() {
    let _cores = cores();
    let mut g = built(&small(Precision::Fp32));
    let good = g.state_to_host().unwrap();
    assert!(g.state_is_finite().unwrap());
    let (p, len) = (g.num_params(), good.len());
    // The first weight, the first moving statistic (right after the weights), the last slot.
    for (i, bad) in [
        (0, f32::NAN),
        (p, f32::INFINITY),
        (len - 1, f32::NEG_INFINITY),
    ] {
        let mut state = good.clone();
        state[i] = bad;
        g.state_from_host(&state).unwrap();
        assert!(!g.state_is_finite().unwrap(), "{bad} at {i}");
    }
    // A huge but finite weight passes: only NaN, inf, or a variable whose sum leaves f32's
    // range fail the check.
    let mut state = good.clone();
    state[1] = 1.0e30;
    g.state_from_host(&state).unwrap();
    assert!(g.state_is_finite().unwrap());
}

/// The overlapped step's two halves, run on two threads, deliver the same gradient bits as the
/// one-run fetch, group by group (groups of one and of many variables), and the same metrics.
#[test]
fn overlapped_halves_deliver_the_same_gradients_group_by_group() {
    let _cores = cores();
    let cfg = small(Precision::Fp32);
    let (mut a, mut b) = (built(&cfg), built(&cfg));
    let n = b.trainable().len();
    let groups = [0..1, 1..n / 2, n / 2..n - 1, n - 1..n];
    b.enable_overlap(&groups).unwrap();
    assert!(b.enable_overlap(&groups).is_err(), "once per graph");
    let mut rng = Rng::new(21);
    for _ in 0..2 {
        let batch = blobs(4, 32, 10, &mut rng);
        let want = a.gradients(&batch.view(), 4.0).unwrap();
        let mut got = Gradients::zeros(b.num_params());
        let view = batch.view();
        let (backward, reader) = b.overlapped(&view, 4.0).unwrap();
        let metrics = std::thread::scope(|s| {
            let worker = s.spawn(move || backward.run());
            for g in (0..reader.groups()).rev() {
                reader.take(g, &mut got, dawnrun_dist::copy_floats).unwrap();
            }
            worker.join().unwrap().unwrap()
        });
        assert_eq!(metrics, want.metrics);
        assert_eq!(got[..], want.grads[..]);
        a.apply(&want.grads, 0.05).unwrap();
        b.apply(&got, 0.05).unwrap();
        assert_eq!(a.state_to_host().unwrap(), b.state_to_host().unwrap());
    }
}

#[test]
fn bad_batches_and_configs_are_refused_with_the_reason() {
    let _cores = cores();
    let mut g = built(&small(Precision::Fp32));
    let mut batch = blobs(4, 32, 10, &mut Rng::new(1));
    batch.labels[2] = 10;
    let err = g.gradients(&batch.view(), 1.0).unwrap_err().to_string();
    assert!(err.contains("label 10 at index 2"), "{err}");
    batch.labels[2] = 0;
    batch.images.pop();
    let err = g.gradients(&batch.view(), 1.0).unwrap_err().to_string();
    assert!(err.contains("[4, 32, 32, 3]"), "{err}");
    let wrong = Gradients::from_host(&[0.0; 3]).unwrap();
    let err = g.apply(&wrong, 0.1).unwrap_err().to_string();
    assert!(err.contains("3 floats"), "{err}");
    let err = TrainGraph::build(&ModelConfig::new(20, 10))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("depth 20"), "{err}");
}

#[test]
fn graph_pinned_to_a_device_runs() {
    let _cores = cores();
    let mut cfg = small(Precision::Fp32);
    cfg.device = Some("/device:CPU:0".into());
    let mut g = built(&cfg);
    let out = g
        .gradients(&blobs(2, 32, 10, &mut Rng::new(4)).view(), 1.0)
        .unwrap();
    g.apply(&out.grads, 0.1).unwrap();
    assert!(out.metrics.loss.is_finite());
}

/// A graph whose final layer ignores the image: fc kernel 0, fc bias `bias`, so the logits of
/// every image are `bias` and the loss can be computed by hand. Returns the graph and its state.
fn with_fixed_logits(cfg: &ModelConfig, bias: &[f32]) -> (TrainGraph, Vec<f32>) {
    let mut g = built(cfg);
    let mut state = g.state_to_host().unwrap();
    let mut at = 0;
    for v in g.state() {
        let slot = &mut state[at..at + v.len];
        if v.name == "resnet/fc/kernel" {
            slot.fill(0.0);
        } else if v.name == "resnet/fc/bias" {
            slot.copy_from_slice(bias);
        }
        at += v.len;
    }
    g.state_from_host(&state).unwrap();
    (g, state)
}

#[test]
fn label_smoothing_gives_the_hand_computed_cross_entropy() {
    let _cores = cores();
    let bias = [0.5f32, -1.0, 2.0, 0.0];
    let k = bias.len();
    // log-softmax of the bias, in f64.
    let max = bias.iter().cloned().fold(f32::MIN, f32::max) as f64;
    let lse = max
        + bias
            .iter()
            .map(|&b| (b as f64 - max).exp())
            .sum::<f64>()
            .ln();
    let log_p: Vec<f64> = bias.iter().map(|&b| b as f64 - lse).collect();
    let batch = blobs(4, 32, k, &mut Rng::new(5));
    for smoothing in [0.0f64, 0.1, 0.3] {
        let mut cfg = ModelConfig::new(18, k as u32);
        cfg.label_smoothing = smoothing as f32;
        let (mut g, _) = with_fixed_logits(&cfg, &bias);
        let out = g.gradients(&batch.view(), 1.0).unwrap();
        // Targets (1 - s) * one_hot + s / K; the loss is the batch mean of -sum t log p.
        let expected: f64 = batch
            .labels
            .iter()
            .map(|&label| {
                (0..k)
                    .map(|c| {
                        let t = smoothing / k as f64
                            + if c == label as usize {
                                1.0 - smoothing
                            } else {
                                0.0
                            };
                        -t * log_p[c]
                    })
                    .sum::<f64>()
            })
            .sum::<f64>()
            / batch.n as f64;
        assert!(
            (out.metrics.loss as f64 - expected).abs() < 1e-5,
            "smoothing {smoothing}: loss {} vs hand {expected}",
            out.metrics.loss
        );
    }
}

#[test]
fn weight_decay_covers_kernels_and_bn_or_bias_only_when_asked() {
    let _cores = cores();
    let bias = [0.25f32, -0.5, 1.0, 0.75];
    let batch = blobs(2, 32, 4, &mut Rng::new(9));
    for (decay_bn, decay_bias) in [(false, false), (true, false), (false, true), (true, true)] {
        let mut cfg = ModelConfig::new(18, 4);
        cfg.weight_decay = 1e-3;
        cfg.decay_bn = decay_bn;
        cfg.decay_bias = decay_bias;
        let (mut g, state) = with_fixed_logits(&cfg, &bias);
        // 0.5 * sum w^2 over exactly the variables that should be decayed, from the state.
        let (mut l2, mut at) = (0.0f64, 0);
        for v in g.trainable().to_vec() {
            let decayed = if v.name.ends_with("/kernel") {
                true
            } else if v.name.ends_with("/gamma") || v.name.ends_with("/beta") {
                decay_bn
            } else {
                assert_eq!(v.name, "resnet/fc/bias");
                decay_bias
            };
            if decayed {
                l2 += state[at..at + v.len]
                    .iter()
                    .map(|&w| 0.5 * (w as f64) * (w as f64))
                    .sum::<f64>();
            }
            at += v.len;
        }
        let out = g.gradients(&batch.view(), 1.0).unwrap();
        let decay = (out.metrics.total_loss - out.metrics.loss) as f64;
        let expected = 1e-3 * l2;
        assert!(
            (decay - expected).abs() <= 1e-4 * expected.max(1e-3),
            "decay_bn {decay_bn} decay_bias {decay_bias}: total - loss = {decay}, hand {expected}"
        );
    }
}

#[test]
fn every_relu_gradient_reads_its_relus_output_so_batch_norm_and_relu_can_fuse() {
    use tensorflow::{Graph, ImportGraphDefOptions};
    let _cores = cores();
    for precision in [Precision::Fp32, Precision::Bf16] {
        let (def, _) = TrainGraph::build(&small(precision))
            .unwrap()
            .graph_def()
            .unwrap();
        let mut graph = Graph::new();
        graph
            .import_graph_def(&def, &ImportGraphDefOptions::new())
            .unwrap();
        let of_type = |t: &str| -> Vec<tensorflow::Operation> {
            graph
                .operation_iter()
                .filter(|op| op.op_type().unwrap() == t)
                .collect()
        };
        let grads = of_type("ReluGrad");
        // ResNet-18: the stem's ReLU and two per basic block (8 blocks).
        assert_eq!(of_type("Relu").len(), 17, "{precision:?}");
        assert_eq!(grads.len(), 17, "{precision:?}");
        for op in grads {
            let (features, _) = op.input(1);
            assert_eq!(
                features.op_type().unwrap(),
                "Relu",
                "{} reads {}",
                op.name().unwrap(),
                features.name().unwrap()
            );
        }
    }
}
