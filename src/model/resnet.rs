//! ResNet v1.5 (He et al. 2015, with the stride-2 on the bottleneck's 3x3 as in the reference
//! ResNet-50), depth 18/34 (basic blocks) or 50/101/152 (bottlenecks), global average pooling so
//! one set of weights serves every image size. Node names (`resnet/stem/conv/kernel`,
//! `resnet/stage1/block0/conv1/kernel`, `resnet/stage1/block0/bn3/gamma`,
//! `resnet/stage2/block0/shortcut/conv/kernel`, `resnet/fc/kernel`, ...) are a file format.
use super::layers::{relu, Net};
use super::tf;
use super::{RGB_MEAN, RGB_STD};
use tensorflow::{ops, DataType, Output, Scope, Status};

/// Block kind and blocks per stage for a depth.
fn layout(depth: u32) -> (bool, [usize; 4]) {
    match depth {
        18 => (false, [2, 2, 2, 2]),
        34 => (false, [3, 4, 6, 3]),
        50 => (true, [3, 4, 6, 3]),
        101 => (true, [3, 4, 23, 3]),
        _ => (true, [3, 8, 36, 3]), // 152; depth is validated by ModelConfig
    }
}

/// Builds the forward pass. `images`: [N, H, W, 3] u8 (RGB) -> logits [N, K] f32.
pub(crate) fn forward(net: &mut Net, root: &mut Scope, images: Output) -> Result<Output, Status> {
    let mut scope = root.new_sub_scope("resnet");
    let x = normalise(net, &mut scope.new_sub_scope("input"), images)?; // [N, H, W, 3] cdt

    let mut stem = scope.new_sub_scope("stem");
    let x = net.conv(&mut stem, "conv", x, 3, 64, 7, 2)?; // [N, H/2, W/2, 64]
    let x = net.batch_norm(&mut stem, "bn", x, 64, false)?;
    let x = relu(&mut stem, x)?;
    let (ks, st) = if net.format() == "NCHW" {
        (vec![1, 1, 3, 3], vec![1, 1, 2, 2])
    } else {
        (vec![1, 3, 3, 1], vec![1, 2, 2, 1])
    };
    let mut x: Output = ops::MaxPool::new()
        .ksize(ks)
        .strides(st)
        .padding("SAME")
        .data_format(net.format())
        .build(x, &mut stem)?
        .into(); // [N, H/4, W/4, 64]

    let (bottleneck, blocks) = layout(net.cfg.depth);
    let expansion = if bottleneck { 4 } else { 1 };
    let mut cin = 64;
    for (stage, &n) in blocks.iter().enumerate() {
        let width = 64 << stage;
        let s = scope.new_sub_scope(&format!("stage{}", stage + 1));
        for block in 0..n {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let mut b = s.new_sub_scope(&format!("block{block}"));
            let convs: &[(i64, i64, i64)] = if bottleneck {
                &[(1, width, 1), (3, width, stride), (1, width * 4, 1)]
            } else {
                &[(3, width, stride), (3, width, 1)]
            };
            x = residual_block(net, &mut b, x, cin, convs)?;
            cin = width * expansion;
        }
    } // [N, H/32, W/32, cin]

    // Pool and classify in fp32: the spatial mean and the logits feed the loss directly.
    let mut head = scope.new_sub_scope("head");
    let x = net.to_f32(&mut head, x)?;
    let axes = tf::const_i32(&mut head, &net.spatial_axes())?;
    let pooled = ops::mean(x, axes, &mut head)?; // [N, cin] f32
    net.dense(
        &mut scope,
        "fc",
        pooled.into(),
        cin,
        i64::from(net.cfg.num_classes),
    )
}

/// [N, H, W, 3] u8 -> (x - mean) / std in the compute dtype, transposed to NCHW if asked.
fn normalise(net: &Net, scope: &mut Scope, images: Output) -> Result<Output, Status> {
    let x = ops::Cast::new()
        .DstT(DataType::Float)
        .build(images, scope)?;
    let mean = tf::const_f32(scope, &RGB_MEAN)?;
    let inv_std = tf::const_f32(scope, &RGB_STD.map(|s| 1.0 / s))?;
    let x = ops::sub(x, mean, scope)?;
    let x = ops::mul(x, inv_std, scope)?;
    let x = net.to_compute(scope, x.into())?;
    if net.format() == "NCHW" {
        let perm = tf::const_i32(scope, &[0, 3, 1, 2])?;
        return Ok(ops::transpose(x, perm, scope)?.into());
    }
    Ok(x)
}

/// Projection shortcut (1x1 conv, stride, BN) when the shape changes, else identity.
fn shortcut(
    net: &mut Net,
    scope: &mut Scope,
    x: Output,
    cin: i64,
    cout: i64,
    stride: i64,
) -> Result<Output, Status> {
    if cin == cout && stride == 1 {
        return Ok(x);
    }
    let mut s = scope.new_sub_scope("shortcut");
    let y = net.conv(&mut s, "conv", x, cin, cout, 1, stride)?;
    net.batch_norm(&mut s, "bn", y, cout, false)
}

/// A residual block: convs `(k, cout, stride)` in order, each followed by BN (the last one's
/// gamma zero-initialised if so configured) and ReLU except the last; then + shortcut -> ReLU.
/// Basic (18/34): 3x3 (stride) -> 3x3. Bottleneck (50+): 1x1 -> 3x3 (stride, v1.5) -> 1x1 (4x).
/// Variables are made shortcut first, then conv1, bn1, conv2, ...: the flat layout's order.
fn residual_block(
    net: &mut Net,
    scope: &mut Scope,
    x: Output,
    cin: i64,
    convs: &[(i64, i64, i64)],
) -> Result<Output, Status> {
    let cout = convs.last().map_or(cin, |c| c.1);
    let stride = convs.iter().map(|c| c.2).product();
    let short = shortcut(net, scope, x.clone(), cin, cout, stride)?;
    let (mut y, mut c) = (x, cin);
    for (i, &(k, out, s)) in convs.iter().enumerate() {
        let last = i + 1 == convs.len();
        y = net.conv(scope, &format!("conv{}", i + 1), y, c, out, k, s)?;
        let zero = last && net.cfg.zero_init_last_bn_gamma;
        y = net.batch_norm(scope, &format!("bn{}", i + 1), y, out, zero)?;
        if !last {
            y = relu(scope, y)?;
        }
        c = out;
    }
    let y = ops::add_v2(y, short, scope)?;
    relu(scope, y.into())
}
