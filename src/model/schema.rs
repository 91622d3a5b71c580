//! The tensors of `model.safetensors`, named in one place (docs/FORMATS.md, "model.safetensors").
//!
//! A config decides which parts each block has; [`Weights::spec`] turns it into a tree of typed
//! parts — a struct per block part, like the per-block structs of candle-transformers — whose
//! leaves are [`TensorSpec`]s (name and shape). Every user resolves that tree once into a tree of
//! its own leaves with [`Weights::try_map`]: Candle tensors for the forward pass
//! ([`crate::model`]), fresh [`crate::tensors::RawTensor`]s that the lowering fills
//! ([`crate::lower`]), borrowed stored tensors that the certifier reads back
//! ([`crate::certify`]). Nothing else formats a tensor name, so the three cannot disagree about
//! what `layers.3.mlp.gate.weight` is.
//!
//! Leaves are visited in one fixed order ([`Weights::visit`]); [`Weights::into_named`] uses it
//! to pair a filled tree with the names of its spec.

use super::config::{MlpKind, ModelConfig, MomentumConfig};
use std::collections::BTreeMap;

/// One tensor of a model file: its name and its shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    fn new(name: impl Into<String>, shape: &[usize]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
        }
    }
}

/// `y = W x + b`: `weight` is `[out, in]`, `bias` is `[out]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Linear<T> {
    pub weight: T,
    pub bias: T,
}

/// LayerNorm's elementwise scale (`weight`) and shift (`bias`), both `[width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Norm<T> {
    pub weight: T,
    pub bias: T,
}

/// Multi-head attention: Q/K projections when the scores come from q·k, the value and output
/// projections, the additive score bias `[heads, max_len, max_len + 1]` (last key: the null key)
/// when the patterns are fixed, and the per-head momentum logit when η is learned.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention<T> {
    pub q: Option<Linear<T>>,
    pub k: Option<Linear<T>>,
    pub v: Linear<T>,
    pub o: Linear<T>,
    pub bias: Option<T>,
    pub momentum_logit: Option<T>,
}

/// The MLP: `down · (gate(m) ⊙ up(m))` when bilinear (`gate` present), else
/// `down · act(up(m))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp<T> {
    pub gate: Option<Linear<T>>,
    pub up: Linear<T>,
    pub down: Linear<T>,
}

/// One block: `h ← h + Attn(attn_norm?(h)); h ← h + MLP(norm?(h))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Block<T> {
    pub attn_norm: Option<Norm<T>>,
    pub attn: Option<Attention<T>>,
    pub norm: Option<Norm<T>>,
    pub mlp: Option<Mlp<T>>,
}

/// Every tensor of a model: token embedding `[width, d+1]`, position table `[max_len, width]`,
/// the blocks, the optional final norm and the read-out `[1, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Weights<T> {
    pub embed: Linear<T>,
    pub pos: T,
    pub layers: Vec<Block<T>>,
    pub final_norm: Option<Norm<T>>,
    pub readout: Linear<T>,
}

/// Maps an optional part with a fallible leaf function.
fn opt<A, B, E>(part: &Option<A>, f: impl FnOnce(&A) -> Result<B, E>) -> Result<Option<B>, E> {
    part.as_ref().map(f).transpose()
}

impl<T> Linear<T> {
    pub fn try_map<U, E>(&self, f: &mut impl FnMut(&T) -> Result<U, E>) -> Result<Linear<U>, E> {
        Ok(Linear {
            weight: f(&self.weight)?,
            bias: f(&self.bias)?,
        })
    }
    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a T)) {
        f(&self.weight);
        f(&self.bias);
    }
    fn visit_mut<'a>(&'a mut self, f: &mut impl FnMut(&'a mut T)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }
    fn into_each(self, f: &mut impl FnMut(T)) {
        f(self.weight);
        f(self.bias);
    }
}

impl<T> Norm<T> {
    pub fn try_map<U, E>(&self, f: &mut impl FnMut(&T) -> Result<U, E>) -> Result<Norm<U>, E> {
        Ok(Norm {
            weight: f(&self.weight)?,
            bias: f(&self.bias)?,
        })
    }
    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a T)) {
        f(&self.weight);
        f(&self.bias);
    }
    fn visit_mut<'a>(&'a mut self, f: &mut impl FnMut(&'a mut T)) {
        f(&mut self.weight);
        f(&mut self.bias);
    }
    fn into_each(self, f: &mut impl FnMut(T)) {
        f(self.weight);
        f(self.bias);
    }
}

impl<T> Attention<T> {
    pub fn try_map<U, E>(&self, f: &mut impl FnMut(&T) -> Result<U, E>) -> Result<Attention<U>, E> {
        Ok(Attention {
            q: opt(&self.q, |l| l.try_map(f))?,
            k: opt(&self.k, |l| l.try_map(f))?,
            v: self.v.try_map(f)?,
            o: self.o.try_map(f)?,
            bias: opt(&self.bias, &mut *f)?,
            momentum_logit: opt(&self.momentum_logit, &mut *f)?,
        })
    }
    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a T)) {
        if let Some(q) = &self.q {
            q.visit(f);
        }
        if let Some(k) = &self.k {
            k.visit(f);
        }
        self.v.visit(f);
        self.o.visit(f);
        self.bias.iter().for_each(&mut *f);
        self.momentum_logit.iter().for_each(f);
    }
    fn visit_mut<'a>(&'a mut self, f: &mut impl FnMut(&'a mut T)) {
        if let Some(q) = &mut self.q {
            q.visit_mut(f);
        }
        if let Some(k) = &mut self.k {
            k.visit_mut(f);
        }
        self.v.visit_mut(f);
        self.o.visit_mut(f);
        self.bias.iter_mut().for_each(&mut *f);
        self.momentum_logit.iter_mut().for_each(f);
    }
    fn into_each(self, f: &mut impl FnMut(T)) {
        if let Some(q) = self.q {
            q.into_each(f);
        }
        if let Some(k) = self.k {
            k.into_each(f);
        }
        self.v.into_each(f);
        self.o.into_each(f);
        self.bias.into_iter().for_each(&mut *f);
        self.momentum_logit.into_iter().for_each(f);
    }
}

impl<T> Mlp<T> {
    pub fn try_map<U, E>(&self, f: &mut impl FnMut(&T) -> Result<U, E>) -> Result<Mlp<U>, E> {
        Ok(Mlp {
            gate: opt(&self.gate, |l| l.try_map(f))?,
            up: self.up.try_map(f)?,
            down: self.down.try_map(f)?,
        })
    }
    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a T)) {
        if let Some(g) = &self.gate {
            g.visit(f);
        }
        self.up.visit(f);
        self.down.visit(f);
    }
    fn visit_mut<'a>(&'a mut self, f: &mut impl FnMut(&'a mut T)) {
        if let Some(g) = &mut self.gate {
            g.visit_mut(f);
        }
        self.up.visit_mut(f);
        self.down.visit_mut(f);
    }
    fn into_each(self, f: &mut impl FnMut(T)) {
        if let Some(g) = self.gate {
            g.into_each(f);
        }
        self.up.into_each(f);
        self.down.into_each(f);
    }
}

impl<T> Block<T> {
    pub fn try_map<U, E>(&self, f: &mut impl FnMut(&T) -> Result<U, E>) -> Result<Block<U>, E> {
        Ok(Block {
            attn_norm: opt(&self.attn_norm, |n| n.try_map(f))?,
            attn: opt(&self.attn, |a| a.try_map(f))?,
            norm: opt(&self.norm, |n| n.try_map(f))?,
            mlp: opt(&self.mlp, |m| m.try_map(f))?,
        })
    }
    fn visit<'a>(&'a self, f: &mut impl FnMut(&'a T)) {
        if let Some(n) = &self.attn_norm {
            n.visit(f);
        }
        if let Some(a) = &self.attn {
            a.visit(f);
        }
        if let Some(n) = &self.norm {
            n.visit(f);
        }
        if let Some(m) = &self.mlp {
            m.visit(f);
        }
    }
    fn visit_mut<'a>(&'a mut self, f: &mut impl FnMut(&'a mut T)) {
        if let Some(n) = &mut self.attn_norm {
            n.visit_mut(f);
        }
        if let Some(a) = &mut self.attn {
            a.visit_mut(f);
        }
        if let Some(n) = &mut self.norm {
            n.visit_mut(f);
        }
        if let Some(m) = &mut self.mlp {
            m.visit_mut(f);
        }
    }
    fn into_each(self, f: &mut impl FnMut(T)) {
        if let Some(n) = self.attn_norm {
            n.into_each(f);
        }
        if let Some(a) = self.attn {
            a.into_each(f);
        }
        if let Some(n) = self.norm {
            n.into_each(f);
        }
        if let Some(m) = self.mlp {
            m.into_each(f);
        }
    }
}

impl<T> Weights<T> {
    /// The same tree with every leaf resolved by `f` (called once per leaf, in [`Self::visit`]
    /// order); the first error stops the walk.
    pub fn try_map<U, E>(&self, mut f: impl FnMut(&T) -> Result<U, E>) -> Result<Weights<U>, E> {
        let f = &mut f;
        Ok(Weights {
            embed: self.embed.try_map(f)?,
            pos: f(&self.pos)?,
            layers: self
                .layers
                .iter()
                .map(|b| b.try_map(f))
                .collect::<Result<_, _>>()?,
            final_norm: opt(&self.final_norm, |n| n.try_map(f))?,
            readout: self.readout.try_map(f)?,
        })
    }

    /// [`Self::try_map`] with an infallible `f`.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Weights<U> {
        match self.try_map(|t| Ok::<U, std::convert::Infallible>(f(t))) {
            Ok(w) => w,
            Err(never) => match never {},
        }
    }

    /// Calls `f` on every leaf: embedding, position table, each block (attention norm, Q, K, V,
    /// O, score bias, momentum logit, MLP norm, gate, up, down), final norm, read-out.
    pub fn visit<'a>(&'a self, mut f: impl FnMut(&'a T)) {
        let f = &mut f;
        self.embed.visit(f);
        f(&self.pos);
        for b in &self.layers {
            b.visit(f);
        }
        if let Some(n) = &self.final_norm {
            n.visit(f);
        }
        self.readout.visit(f);
    }

    /// The leaves, moved out in [`Self::visit`] order.
    pub fn into_leaves(self) -> Vec<T> {
        let mut out = Vec::new();
        let f = &mut |t: T| out.push(t);
        self.embed.into_each(f);
        f(self.pos);
        for b in self.layers {
            b.into_each(f);
        }
        if let Some(n) = self.final_norm {
            n.into_each(f);
        }
        self.readout.into_each(f);
        out
    }

    /// The leaves in [`Self::visit`] order.
    pub fn leaves(&self) -> Vec<&T> {
        let mut out = Vec::new();
        self.visit(|t| out.push(t));
        out
    }

    /// The leaves, mutably, in [`Self::visit`] order.
    pub fn leaves_mut(&mut self) -> Vec<&mut T> {
        let mut out = Vec::new();
        let f = &mut |t| out.push(t);
        self.embed.visit_mut(f);
        f(&mut self.pos);
        for b in &mut self.layers {
            b.visit_mut(f);
        }
        if let Some(n) = &mut self.final_norm {
            n.visit_mut(f);
        }
        self.readout.visit_mut(f);
        out
    }
}

impl Weights<TensorSpec> {
    /// Every tensor `c` requires, named and shaped (docs/FORMATS.md, table "model.safetensors").
    pub fn spec(c: &ModelConfig) -> Weights<TensorSpec> {
        let w = c.width;
        let linear = |p: &str, out: usize, inp: usize| Linear {
            weight: TensorSpec::new(format!("{p}.weight"), &[out, inp]),
            bias: TensorSpec::new(format!("{p}.bias"), &[out]),
        };
        let norm = |p: &str| Norm {
            weight: TensorSpec::new(format!("{p}.weight"), &[w]),
            bias: TensorSpec::new(format!("{p}.bias"), &[w]),
        };
        let layers = c
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let p = format!("layers.{l}");
                Block {
                    attn_norm: layer.attn_norm.map(|_| norm(&format!("{p}.attn_norm"))),
                    attn: layer.attn.as_ref().map(|a| {
                        let (pa, inner) = (format!("{p}.attn"), a.inner());
                        let qk = |n: &str| a.qk.then(|| linear(&format!("{pa}.{n}"), inner, w));
                        Attention {
                            q: qk("q"),
                            k: qk("k"),
                            v: linear(&format!("{pa}.v"), inner, w),
                            o: linear(&format!("{pa}.o"), w, inner),
                            bias: a.bias.then(|| {
                                TensorSpec::new(
                                    format!("{pa}.bias"),
                                    &[a.heads, c.max_len, c.max_len + 1],
                                )
                            }),
                            momentum_logit: matches!(
                                a.momentum,
                                Some(MomentumConfig::Learned { .. })
                            )
                            .then(|| TensorSpec::new(format!("{pa}.momentum_logit"), &[a.heads])),
                        }
                    }),
                    norm: layer.norm.map(|_| norm(&format!("{p}.norm"))),
                    mlp: layer.mlp.as_ref().map(|m| {
                        let pm = format!("{p}.mlp");
                        Mlp {
                            gate: (m.kind == MlpKind::Bilinear)
                                .then(|| linear(&format!("{pm}.gate"), m.hidden, w)),
                            up: linear(&format!("{pm}.up"), m.hidden, w),
                            down: linear(&format!("{pm}.down"), w, m.hidden),
                        }
                    }),
                }
            })
            .collect();
        Weights {
            embed: linear("embed", w, c.d + 1),
            pos: TensorSpec::new("pos.weight", &[c.max_len, w]),
            layers,
            final_norm: c.final_norm.map(|_| norm("final_norm")),
            readout: linear("readout", 1, w),
        }
    }

    /// Name → shape of every tensor, sorted by name.
    pub fn shapes(&self) -> BTreeMap<String, Vec<usize>> {
        let mut m = BTreeMap::new();
        self.visit(|s| {
            m.insert(s.name.clone(), s.shape.clone());
        });
        m
    }

    /// Pairs the leaves of `filled` (a tree built from this spec, e.g. by [`Weights::map`]) with
    /// their names.
    pub fn into_named<T>(&self, filled: Weights<T>) -> BTreeMap<String, T> {
        let names = self.leaves().into_iter().map(|s| s.name.clone());
        names.zip(filled.into_leaves()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{
        AttnConfig, DType, LayerConfig, MlpConfig, ModelKind, NormConfig, MODEL_FORMAT,
    };

    /// A config with every optional part somewhere: Q/K and a score bias, learned momentum, both
    /// norms, a bilinear and a GeLU MLP, a final norm.
    fn config() -> ModelConfig {
        let attn = |qk, bias, momentum| AttnConfig {
            heads: 2,
            head_dim: 3,
            qk,
            bias,
            zero_attn: bias,
            momentum,
        };
        let mlp = |kind| MlpConfig {
            kind,
            hidden: 5,
            activation: crate::model::config::Activation::Gelu,
        };
        let norm = Some(NormConfig { eps: 1e-5 });
        ModelConfig {
            format: MODEL_FORMAT.into(),
            kind: ModelKind::Trained,
            target: "paper".into(),
            dtype: DType::F64,
            d: 2,
            n: 3,
            max_len: 7,
            width: 4,
            layers: vec![
                LayerConfig {
                    attn_norm: None,
                    attn: Some(attn(false, true, None)),
                    norm,
                    mlp: Some(mlp(MlpKind::Bilinear)),
                },
                LayerConfig {
                    attn_norm: norm,
                    attn: Some(attn(
                        true,
                        false,
                        Some(MomentumConfig::Learned { learned: true }),
                    )),
                    norm: None,
                    mlp: Some(mlp(MlpKind::Gelu)),
                },
                LayerConfig {
                    attn_norm: None,
                    attn: None,
                    norm: None,
                    mlp: None,
                },
            ],
            final_norm: norm,
            readout_row: None,
        }
    }

    #[test]
    fn spec_names_every_part_once_with_its_shape() {
        let spec = Weights::spec(&config());
        let shapes = spec.shapes();
        assert_eq!(shapes.len(), spec.leaves().len(), "a name is used twice");
        let want: &[(&str, &[usize])] = &[
            ("embed.weight", &[4, 3]),
            ("embed.bias", &[4]),
            ("pos.weight", &[7, 4]),
            ("layers.0.attn.v.weight", &[6, 4]),
            ("layers.0.attn.o.weight", &[4, 6]),
            ("layers.0.attn.o.bias", &[4]),
            ("layers.0.attn.bias", &[2, 7, 8]),
            ("layers.0.norm.weight", &[4]),
            ("layers.0.mlp.gate.weight", &[5, 4]),
            ("layers.0.mlp.up.bias", &[5]),
            ("layers.0.mlp.down.weight", &[4, 5]),
            ("layers.1.attn_norm.bias", &[4]),
            ("layers.1.attn.q.weight", &[6, 4]),
            ("layers.1.attn.k.bias", &[6]),
            ("layers.1.attn.momentum_logit", &[2]),
            ("layers.1.mlp.up.weight", &[5, 4]),
            ("final_norm.weight", &[4]),
            ("readout.weight", &[1, 4]),
            ("readout.bias", &[1]),
        ];
        for (name, shape) in want {
            assert_eq!(shapes.get(*name).map(|s| &s[..]), Some(*shape), "{name}");
        }
        for absent in [
            "layers.0.attn.q.weight",
            "layers.0.attn.momentum_logit",
            "layers.0.attn_norm.weight",
            "layers.1.attn.bias",
            "layers.1.mlp.gate.weight",
            "layers.1.norm.weight",
            "layers.2.mlp.up.weight",
        ] {
            assert!(!shapes.contains_key(absent), "{absent} should not exist");
        }
        // 2 embed + pos + layer 0 (v,o: 4; bias 1; norm 2; mlp 6) + layer 1 (norm 2; q,k,v,o 8;
        // momentum 1; mlp 4) + final norm 2 + readout 2.
        assert_eq!(shapes.len(), 3 + 13 + 15 + 2 + 2);
    }

    #[test]
    fn map_and_into_named_keep_leaves_with_their_names() {
        let spec = Weights::spec(&config());
        let sizes = spec.map(|s| s.shape.iter().product::<usize>());
        let named = spec.into_named(sizes);
        for (name, shape) in spec.shapes() {
            assert_eq!(named[&name], shape.iter().product::<usize>(), "{name}");
        }
        let err = spec.try_map(|s| {
            if s.name.contains("momentum") {
                Err(s.name.clone())
            } else {
                Ok(())
            }
        });
        assert_eq!(err, Err("layers.1.attn.momentum_logit".to_string()));
    }
}
