//! Fused kernels for the per-token int8 arithmetic of the shipped models, registered with every
//! session as the custom operator domain [`DOMAIN`].
//!
//! The shipped graphs quantise each activation row (token) on its own, so a text's scores do not
//! depend on the texts it shares a call with, as standard operators: `Abs`, `ReduceMax`, `Max`,
//! `Mul` for the row's scale, `Shape`, `Expand` and a blocked `QuantizeLinear` for its bytes, then
//! after each integer GEMM (`MatMulIntegerToFloat`) a `Mul` by the row's scale and an `Add` of the
//! bias: about ten passes over the tensor and as many operator dispatches around every GEMM. The
//! two operators here do the same arithmetic in one pass each, with the same roundings in the same
//! order, so the scores are bit-identical (the test in src/inference/mod.rs checks both shipped
//! models, one text per call and batched):
//!
//! - `RowQuantize(x, eps, inv_max, zero_point) -> (q, scale)`: per row of the last axis,
//!   `scale = max(max |x|, eps) * inv_max` and `q = saturate(round_half_even(x / scale) + zero_point)`
//!   (uint8), as `QuantizeLinear` computes it.
//! - `RowScaleBias(acc, scale[, bias[, residual]]) -> y`: `y = acc * scale_row (+ bias_col (+
//!   residual))`, rounded after the product and after each sum like the `Mul` and `Add`s it
//!   replaces; `RowScaleResidualBias` adds the residual (a skip connection) before the bias.
//!
//! On a session with several intra-op threads (the solo session a lone call runs on), a tensor of
//! more than a few thousand values is split by rows over them (`ComputeContext::par_for`, ONNX
//! Runtime's own pool): a kernel on one thread while ONNX Runtime's operators used two made
//! folding the skip connections in 7-8 % slower for a lone text (BENCHMARKS.md).
//!
//! Model files keep the standard operators: src/inference/fuse.rs puts these in when a model is
//! loaded (`model.fused_kernels`).

use ort::operator::{
    BoxedKernel, ComputeContext, KernelContext, Operator, OperatorDomain, OperatorInput,
    OperatorOutput,
};
use ort::value::TensorElementType;
use std::sync::Mutex;

/// The custom operator domain of the fused kernels.
pub const DOMAIN: &str = "ai.emotion";

/// The domain with the operators, for a session builder whose calls run on `threads` threads:
/// a tensor large enough is split by rows over them (ONNX Runtime's own pool for the session,
/// through `ComputeContext::par_for`), as ONNX Runtime's element-wise operators are.
pub fn domain(threads: usize) -> ort::Result<OperatorDomain> {
    let threads = threads.max(1);
    OperatorDomain::new(DOMAIN)?
        .add(RowQuantize { threads })?
        .add(RowScaleBias {
            residual_first: false,
            threads,
        })?
        .add(RowScaleBias {
            residual_first: true,
            threads,
        })?
        .add(RowScaleBiasSplit { threads })
}

/// The fewest values a part of a split tensor gets: below that, handing a part to another
/// thread costs more than computing it (a few microseconds for a short text's rows).
const MIN_PART_VALUES: usize = 4096;

/// Into how many parts `rows` rows of `width` values split over `threads` threads.
fn parts(rows: usize, width: usize, threads: usize) -> usize {
    threads.min(rows * width / MIN_PART_VALUES).min(rows).max(1)
}

/// Runs `work` on each part, on the session's threads when there is more than one part.
fn run_parts<P: Send>(
    ctx: &ComputeContext,
    parts: Vec<P>,
    work: impl Fn(P) + Sync + Send,
) -> ort::Result<()> {
    if parts.len() <= 1 {
        parts.into_iter().for_each(work);
        return Ok(());
    }
    let slots: Vec<Mutex<Option<P>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    // Each index runs once; the closure must not panic (it runs inside ONNX Runtime's threads).
    let take = |i: usize| slots.get(i).and_then(|s| s.lock().ok()?.take());
    ctx.par_for(slots.len(), slots.len(), |i| {
        if let Some(part) = take(i) {
            work(part)
        }
    })?;
    // Whatever the pool did not run (nothing, as ONNX Runtime documents it) runs here.
    for i in 0..slots.len() {
        if let Some(part) = take(i) {
            work(part)
        }
    }
    Ok(())
}

/// Splits a tensor of `width`-value rows into `n` runs of whole rows (the last ones shorter).
fn split_rows<T>(values: &[T], width: usize, n: usize) -> impl Iterator<Item = &[T]> {
    let rows = values.len() / width.max(1);
    values.chunks(rows.div_ceil(n.max(1)).max(1) * width.max(1))
}

/// [`split_rows`] of a mutable tensor.
fn split_rows_mut<T>(values: &mut [T], width: usize, n: usize) -> impl Iterator<Item = &mut [T]> {
    let rows = values.len() / width.max(1);
    values.chunks_mut(rows.div_ceil(n.max(1)).max(1) * width.max(1))
}

fn missing(what: &str) -> ort::Error {
    ort::Error::new(format!("{what} missing"))
}

/// Per-row dynamic quantisation to uint8.
struct RowQuantize {
    threads: usize,
}

impl Operator for RowQuantize {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "RowQuantize"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Uint8),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [
            OperatorOutput::required(TensorElementType::Uint8),
            OperatorOutput::required(TensorElementType::Float32),
        ]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let threads = self.threads;
        Ok(Box::new(move |ctx: &ComputeContext| {
            let x = ctx.input(0)?.ok_or_else(|| missing("RowQuantize x"))?;
            let (shape, x) = x.try_extract_tensor::<f32>()?;
            let scalar = |i: usize| -> ort::Result<f32> {
                let v = ctx.input(i)?.ok_or_else(|| missing("RowQuantize scalar"))?;
                let (_, v) = v.try_extract_tensor::<f32>()?;
                v.first()
                    .copied()
                    .ok_or_else(|| missing("RowQuantize scalar value"))
            };
            let (eps, inv_max) = (scalar(1)?, scalar(2)?);
            let zero_point = {
                let v = ctx
                    .input(3)?
                    .ok_or_else(|| missing("RowQuantize zero_point"))?;
                let (_, v) = v.try_extract_tensor::<u8>()?;
                *v.first()
                    .ok_or_else(|| missing("RowQuantize zero_point value"))?
            };
            let width = shape.last().copied().unwrap_or(1).max(1) as usize;
            let mut scale_shape = shape.to_vec();
            if let Some(last) = scale_shape.last_mut() {
                *last = 1;
            }
            let mut q = ctx
                .output(0, shape.to_vec())?
                .ok_or_else(|| missing("RowQuantize q"))?;
            let (_, q) = q.try_extract_tensor_mut::<u8>()?;
            let mut scale = ctx
                .output(1, scale_shape)?
                .ok_or_else(|| missing("RowQuantize scale"))?;
            let (_, scale) = scale.try_extract_tensor_mut::<f32>()?;
            if x.len() != q.len() || scale.len() * width != x.len() {
                return Err(ort::Error::new(format!(
                    "RowQuantize: x {shape:?} into {} bytes and {} row scales",
                    q.len(),
                    scale.len()
                )));
            }
            let n = parts(scale.len(), width, threads);
            let split = split_rows(x, width, n)
                .zip(split_rows_mut(q, width, n))
                .zip(split_rows_mut(scale, 1, n));
            run_parts(ctx, split.collect(), |((x, q), scale)| {
                row_quantize(x, width, eps, inv_max, zero_point, q, scale)
            })
        }))
    }
}

/// `RowScaleBias(acc, scale[, bias[, residual]])`: `acc * scale_row (+ bias_col (+ residual))`;
/// `RowScaleResidualBias(acc, scale, bias, residual)`: `acc * scale_row + residual + bias_col`,
/// each sum in the order written (the two orders the shipped graphs' skip connections have).
struct RowScaleBias {
    residual_first: bool,
    threads: usize,
}

impl Operator for RowScaleBias {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        match self.residual_first {
            true => "RowScaleResidualBias",
            false => "RowScaleBias",
        }
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::required(TensorElementType::Float32),
            OperatorInput::optional(TensorElementType::Float32),
            OperatorInput::optional(TensorElementType::Float32),
        ]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let (residual_first, threads) = (self.residual_first, self.threads);
        Ok(Box::new(move |ctx: &ComputeContext| {
            let acc = ctx.input(0)?.ok_or_else(|| missing("RowScaleBias acc"))?;
            let (shape, acc) = acc.try_extract_tensor::<f32>()?;
            let scale = ctx.input(1)?.ok_or_else(|| missing("RowScaleBias scale"))?;
            let (_, scale) = scale.try_extract_tensor::<f32>()?;
            let inputs = ctx.num_inputs()?;
            let bias = match inputs > 2 {
                true => ctx.input(2)?,
                false => None,
            };
            let bias = match &bias {
                Some(b) => Some(b.try_extract_tensor::<f32>()?.1),
                None => None,
            };
            let residual = match inputs > 3 {
                true => ctx.input(3)?,
                false => None,
            };
            let residual = match &residual {
                Some(r) => {
                    let (skip_shape, r) = r.try_extract_tensor::<f32>()?;
                    if **skip_shape != **shape {
                        return Err(ort::Error::new(format!(
                            "RowScaleBias: a residual of shape {skip_shape:?} for acc {shape:?}"
                        )));
                    }
                    Some(r)
                }
                None => None,
            };
            let width = shape.last().copied().unwrap_or(1).max(1) as usize;
            // A residual of another shape (one that would broadcast) is refused, not guessed
            // at: the load's smoke inference (two texts of different lengths) then falls back
            // to the model file.
            if scale.len() * width != acc.len()
                || bias.is_some_and(|b| b.len() != width)
                || residual.is_some_and(|r| r.len() != acc.len() || bias.is_none())
            {
                return Err(ort::Error::new(format!(
                    "RowScaleBias: acc {shape:?} with {} row scales, a bias of {:?} and a residual of {:?}",
                    scale.len(),
                    bias.map(<[f32]>::len),
                    residual.map(<[f32]>::len)
                )));
            }
            let mut y = ctx
                .output(0, shape.to_vec())?
                .ok_or_else(|| missing("RowScaleBias y"))?;
            let (_, y) = y.try_extract_tensor_mut::<f32>()?;
            let n = parts(scale.len(), width, threads);
            let mut residuals = residual.map(|r| split_rows(r, width, n));
            let split = split_rows(acc, width, n)
                .zip(split_rows(scale, 1, n))
                .zip(split_rows_mut(y, width, n))
                .map(|p| (p, residuals.as_mut().and_then(Iterator::next)));
            run_parts(ctx, split.collect(), |(((acc, scale), y), residual)| {
                let residual = residual.map(|r| (r, residual_first));
                row_scale_bias(acc, width, scale, bias, residual, y)
            })
        }))
    }
}

/// `RowScaleBiasSplit(acc, scale, bias) -> (y0, y1, y2)`: `acc * scale_row + bias_col` as
/// `RowScaleBias` computes it, with the columns cut into three equal outputs: the query, key and
/// value projections of a layer, run as one integer GEMM of three times the width (fuse.rs).
struct RowScaleBiasSplit {
    threads: usize,
}

/// The outputs of [`RowScaleBiasSplit`].
const SPLIT: usize = 3;

impl Operator for RowScaleBiasSplit {
    type Kernel<'attr> = BoxedKernel<'attr>;

    fn name(&self) -> &str {
        "RowScaleBiasSplit"
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        (0..3).map(|_| OperatorInput::required(TensorElementType::Float32))
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        (0..SPLIT).map(|_| OperatorOutput::required(TensorElementType::Float32))
    }

    fn create_kernel<'attr>(&self, _: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let threads = self.threads;
        Ok(Box::new(move |ctx: &ComputeContext| {
            let input = |i: usize| {
                ctx.input(i)?
                    .ok_or_else(|| missing("RowScaleBiasSplit input"))
            };
            let acc = input(0)?;
            let (shape, acc) = acc.try_extract_tensor::<f32>()?;
            let scale = input(1)?;
            let (_, scale) = scale.try_extract_tensor::<f32>()?;
            let bias = input(2)?;
            let (_, bias) = bias.try_extract_tensor::<f32>()?;
            let width = shape.last().copied().unwrap_or(1).max(1) as usize;
            if scale.len() * width != acc.len()
                || bias.len() != width
                || !width.is_multiple_of(SPLIT)
            {
                return Err(ort::Error::new(format!(
                    "RowScaleBiasSplit: acc {shape:?} with {} row scales and a bias of {}",
                    scale.len(),
                    bias.len()
                )));
            }
            let part = width / SPLIT;
            let mut part_shape = shape.to_vec();
            if let Some(last) = part_shape.last_mut() {
                *last = part as i64;
            }
            let mut outputs = Vec::with_capacity(SPLIT);
            for i in 0..SPLIT {
                outputs.push(
                    ctx.output(i, part_shape.clone())?
                        .ok_or_else(|| missing("RowScaleBiasSplit y"))?,
                );
            }
            let mut ys = Vec::with_capacity(SPLIT);
            for y in &mut outputs {
                ys.push(y.try_extract_tensor_mut::<f32>()?.1);
            }
            let [y0, y1, y2] = <[&mut [f32]; SPLIT]>::try_from(ys)
                .map_err(|_| missing("RowScaleBiasSplit outputs"))?;
            let n = parts(scale.len(), width, threads);
            let split = split_rows(acc, width, n)
                .zip(split_rows(scale, 1, n))
                .zip(split_rows_mut(y0, part, n))
                .zip(split_rows_mut(y1, part, n))
                .zip(split_rows_mut(y2, part, n));
            run_parts(ctx, split.collect(), |((((acc, scale), y0), y1), y2)| {
                row_scale_bias_split(acc, width, scale, bias, [y0, y1, y2])
            })
        }))
    }
}

/// Quantises each row of `width` values of `x` into `q` with its own scale (into `scale`).
///
/// Compiled for the widest vector instructions the CPU has (`pulp` picks AVX-512, AVX2 or the
/// baseline at run time); the rounding is the addition of 1.5 x 2^23, which rounds half to even
/// like `QuantizeLinear`'s conversion for any level below 2^22 (the levels here stay within the
/// row's +-127) and leaves the level in the sum's low bits.
pub fn row_quantize(
    x: &[f32],
    width: usize,
    eps: f32,
    inv_max: f32,
    zero_point: u8,
    q: &mut [u8],
    scale: &mut [f32],
) {
    struct Run<'a>(&'a [f32], usize, f32, f32, u8, &'a mut [u8], &'a mut [f32]);
    impl pulp::WithSimd for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let Run(x, width, eps, inv_max, zero_point, q, scale) = self;
            row_quantize_scalar(x, width, eps, inv_max, zero_point, q, scale)
        }
    }
    pulp::Arch::new().dispatch(Run(x, width, eps, inv_max, zero_point, q, scale))
}

#[inline(always)]
fn row_quantize_scalar(
    x: &[f32],
    width: usize,
    eps: f32,
    inv_max: f32,
    zero_point: u8,
    q: &mut [u8],
    scale: &mut [f32],
) {
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    let zero_point = i32::from(zero_point);
    for ((row, q_row), s) in x
        .chunks_exact(width)
        .zip(q.chunks_exact_mut(width))
        .zip(scale.iter_mut())
    {
        // 32 running maxima (independent vector registers, so the reduction is not one long
        // chain of dependent steps), each a compare and select, which is one vector max.
        let mut lanes = [0.0f32; 32];
        let mut chunks = row.chunks_exact(32);
        for chunk in &mut chunks {
            for (m, v) in lanes.iter_mut().zip(chunk) {
                let a = v.abs();
                *m = if a > *m { a } else { *m };
            }
        }
        let max = (chunks.remainder().iter())
            .chain(&lanes)
            .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m });
        let row_scale = max.max(eps) * inv_max;
        *s = row_scale;
        for (v, out) in row.iter().zip(q_row.iter_mut()) {
            // As QuantizeLinear: divide, round half to even, add the zero point, saturate. The
            // sum's bits less ROUND's are the rounded level (integer steps: no float-to-int
            // conversion, which does not vectorise as well).
            let level = (v / row_scale + ROUND).to_bits() as i32 - ROUND_BITS;
            *out = (level + zero_point).clamp(0, 255) as u8;
        }
    }
}

/// `y = acc * scale_row (+ bias)` over rows of `width`; with a `residual` (the shape of `acc`,
/// only with a bias) `(acc * scale_row + bias) + residual`, or `(acc * scale_row + residual) +
/// bias` if it comes first (`.1`): the product rounded, then each sum in that order, as the `Mul`
/// and `Add`s it replaces (no fused multiply-add).
pub fn row_scale_bias(
    acc: &[f32],
    width: usize,
    scale: &[f32],
    bias: Option<&[f32]>,
    residual: Option<(&[f32], bool)>,
    y: &mut [f32],
) {
    struct Run<'a>(
        &'a [f32],
        usize,
        &'a [f32],
        Option<&'a [f32]>,
        Option<(&'a [f32], bool)>,
        &'a mut [f32],
    );
    impl pulp::WithSimd for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let Run(acc, width, scale, bias, residual, y) = self;
            row_scale_bias_scalar(acc, width, scale, bias, residual, y)
        }
    }
    pulp::Arch::new().dispatch(Run(acc, width, scale, bias, residual, y))
}

/// `acc * scale_row + bias` over rows of `width`, each row's columns cut into `ys.len()` equal
/// parts, part `i` into `ys[i]`: the arithmetic of [`row_scale_bias`] with a bias.
pub fn row_scale_bias_split(
    acc: &[f32],
    width: usize,
    scale: &[f32],
    bias: &[f32],
    ys: [&mut [f32]; SPLIT],
) {
    struct Run<'a>(
        &'a [f32],
        usize,
        &'a [f32],
        &'a [f32],
        [&'a mut [f32]; SPLIT],
    );
    impl pulp::WithSimd for Run<'_> {
        type Output = ();
        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            let Run(acc, width, scale, bias, ys) = self;
            let part = width / SPLIT;
            for (i, y) in ys.into_iter().enumerate() {
                let bias = &bias[i * part..(i + 1) * part];
                for ((row, out), &s) in acc
                    .chunks_exact(width)
                    .zip(y.chunks_exact_mut(part))
                    .zip(scale)
                {
                    let row = &row[i * part..(i + 1) * part];
                    for ((a, o), b) in row.iter().zip(out.iter_mut()).zip(bias) {
                        *o = a * s + b;
                    }
                }
            }
        }
    }
    pulp::Arch::new().dispatch(Run(acc, width, scale, bias, ys))
}

#[inline(always)]
fn row_scale_bias_scalar(
    acc: &[f32],
    width: usize,
    scale: &[f32],
    bias: Option<&[f32]>,
    residual: Option<(&[f32], bool)>,
    y: &mut [f32],
) {
    if let (Some(bias), Some((residual, first))) = (bias, residual) {
        for (((row, out), skip), &s) in acc
            .chunks_exact(width)
            .zip(y.chunks_exact_mut(width))
            .zip(residual.chunks_exact(width))
            .zip(scale)
        {
            let terms = row.iter().zip(out.iter_mut()).zip(bias).zip(skip);
            match first {
                true => terms.for_each(|(((a, o), b), r)| *o = (a * s + r) + b),
                false => terms.for_each(|(((a, o), b), r)| *o = (a * s + b) + r),
            }
        }
        return;
    }
    for ((row, out), &s) in acc
        .chunks_exact(width)
        .zip(y.chunks_exact_mut(width))
        .zip(scale)
    {
        match bias {
            Some(bias) => {
                for ((a, o), b) in row.iter().zip(out.iter_mut()).zip(bias) {
                    *o = a * s + b;
                }
            }
            None => {
                for (a, o) in row.iter().zip(out.iter_mut()) {
                    *o = a * s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantises_each_row_with_its_own_scale() {
        let x = [0.5f32, -1.0, 0.25, 0.0, 10.0, -4.0, 2.5, 1.0];
        let (mut q, mut s) = ([0u8; 8], [0f32; 2]);
        let inv = 1.0f32 / 127.0;
        row_quantize(&x, 4, 1e-8, inv, 128, &mut q, &mut s);
        assert_eq!(s, [inv, 10.0 * inv]);
        assert_eq!(q, [192, 1, 160, 128, 255, 77, 160, 141]);
        let (mut q1, mut s1) = ([0u8; 4], [0f32; 1]);
        row_quantize(&x[4..], 4, 1e-8, inv, 128, &mut q1, &mut s1);
        assert_eq!(
            (&q[4..], s[1]),
            (&q1[..], s1[0]),
            "a row does not depend on the others"
        );
    }

    #[test]
    fn rounds_half_to_even_and_keeps_a_zero_row_finite() {
        // Scale 1 (128 x 1/128, both exact): levels 0.5, 1.5 and -2.5 round to 0, 2 and -2, and
        // 128 + 128 saturates; an all-zero row takes the eps scale.
        let x = [128.0f32, 0.5, 1.5, -2.5];
        let (mut q, mut s) = ([0u8; 4], [0f32; 1]);
        row_quantize(&x, 4, 1e-8, 1.0 / 128.0, 128, &mut q, &mut s);
        assert_eq!((q, s), ([255, 128, 130, 126], [1.0]));
        let (mut q, mut s) = ([0u8; 2], [0f32; 1]);
        let inv = 1.0f32 / 127.0;
        row_quantize(&[0.0, 0.0], 2, 1e-8, inv, 128, &mut q, &mut s);
        assert_eq!((q, s), ([128, 128], [1e-8 * inv]));
    }

    #[test]
    fn splits_whole_rows_over_the_threads_only_when_large_enough() {
        assert_eq!(parts(22, 384, 2), 2);
        assert_eq!(parts(22, 384, 1), 1);
        assert_eq!(parts(5, 384, 2), 1, "under twice the smallest part: one");
        assert_eq!(parts(3, 10_000, 8), 3, "never more parts than rows");
        let x: Vec<u32> = (0..7 * 3).collect();
        for n in 1..=8 {
            let split: Vec<&[u32]> = split_rows(&x, 3, n).collect();
            assert!(split.len() <= n.min(7), "{n}: {split:?}");
            assert!(
                split.iter().all(|p| !p.is_empty() && p.len() % 3 == 0),
                "{n}"
            );
            assert_eq!(split.concat(), x, "{n}: every row once, in order");
            let mut y = x.clone();
            assert_eq!(split_rows_mut(&mut y, 3, n).count(), split.len());
        }
    }

    #[test]
    fn scales_rows_and_adds_the_bias() {
        let acc = [1.0f32, 2.0, 3.0, 4.0];
        let mut y = [0f32; 4];
        row_scale_bias(&acc, 2, &[2.0, 0.5], Some(&[0.25, -1.0]), None, &mut y);
        assert_eq!(y, [2.25, 3.0, 1.75, 1.0]);
        row_scale_bias(&acc, 2, &[2.0, 0.5], None, None, &mut y);
        assert_eq!(y, [2.0, 4.0, 1.5, 2.0]);
        // With a residual: each sum rounded in turn, in the graph's order. The product 1, the
        // bias 2^-24, the residual -1: 1 + 2^-24 rounds to 1, so bias first leaves 0 and the
        // residual first 2^-24.
        let tiny = f32::EPSILON / 2.0;
        for (first, expected) in [(false, 0.0), (true, tiny)] {
            row_scale_bias(
                &[0.5, 2.0, 3.0, 4.0],
                2,
                &[2.0, 0.5],
                Some(&[tiny, -1.0]),
                Some((&[-1.0, 1.0, 0.5, 0.0], first)),
                &mut y,
            );
            assert_eq!(y, [expected, 4.0, 2.0, 1.0], "residual first: {first}");
        }
    }

    #[test]
    fn splits_the_columns_into_three_as_three_scale_bias_kernels_would() {
        // Two rows of three parts of 5 columns (odd, so no part is a whole vector).
        let (rows, part) = (2, 5);
        let width = 3 * part;
        let acc: Vec<f32> = (0..rows * width).map(|i| i as f32 * 0.37 - 4.0).collect();
        let bias: Vec<f32> = (0..width).map(|i| 1.0 / (i as f32 + 3.0)).collect();
        let scale = [0.3f32, -1.7];
        let mut ys = vec![vec![0f32; rows * part]; 3];
        let [y0, y1, y2] = ys.as_mut_slice() else {
            unreachable!()
        };
        row_scale_bias_split(&acc, width, &scale, &bias, [y0, y1, y2]);
        for (i, y) in ys.iter().enumerate() {
            let columns = i * part..(i + 1) * part;
            let acc: Vec<f32> = (acc.chunks(width))
                .flat_map(|row| row[columns.clone()].to_vec())
                .collect();
            let mut expected = vec![0f32; rows * part];
            row_scale_bias(
                &acc,
                part,
                &scale,
                Some(&bias[columns]),
                None,
                &mut expected,
            );
            assert_eq!(*y, expected, "part {i}");
        }
    }
}
