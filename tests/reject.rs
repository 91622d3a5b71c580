//! The front end's case table: programs that must be rejected (each with the diagnostic codes
//! it must produce, and a snapshot of the rendered diagnostics), and programs that must be
//! accepted, whose IR is checked field by field.

use icl::front::load_program;
use icl::ir::{Bound, Builtin, ColumnSet, OpKind, Operand, ParamValue, Pattern, RegKind, Shape};

struct Case {
    name: &'static str,
    src: String,
    sets: Vec<(String, String)>,
    /// Codes of the diagnostics, in reported (source position) order.
    codes: Vec<&'static str>,
}

/// `d = 2`, `n = 3` header shared by most cases.
const HEAD: &str = "param d = 2\nparam n = 3\n";

fn case(name: &'static str, body: &str, codes: &[&'static str]) -> Case {
    Case {
        name,
        src: format!("{HEAD}{body}"),
        sets: vec![],
        codes: codes.to_vec(),
    }
}

fn raw(name: &'static str, src: &str, codes: &[&'static str]) -> Case {
    Case {
        name,
        src: src.to_string(),
        sets: vec![],
        codes: codes.to_vec(),
    }
}

fn with_sets(mut c: Case, sets: &[(&str, &str)]) -> Case {
    c.sets = sets
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    c
}

/// A minimal valid tail: writes and outputs a scalar.
const TAIL: &str = "mov o <- y from prev\noutput o\n";

fn reject_cases() -> Vec<Case> {
    vec![
        // ---- syntax
        case("syntax_expected_found", "mov a <- y frm prev\noutput a\n", &["syntax"]),
        case(
            "syntax_several",
            "mov a <- <- y from prev\nreg b: vec[\nmul c <- a * \noutput a\n",
            &["syntax", "syntax", "syntax"],
        ),
        case("syntax_unclosed_block", "for i in 1..=2 {\nmov o <- y from prev\n", &["syntax"]),
        case("syntax_stray_brace", "mov o <- y from prev\n}\noutput o\n", &["syntax"]),
        case("syntax_div_needs_bars", "div q <- y / one\noutput q\n", &["syntax"]),
        case("unexpected_character", "mov o <- y from prev $\noutput o\n", &["unexpected-character"]),
        case("number_too_large", "param k = 99999999999999999999\n", &["number-too-large"]),
        raw("too_deep", &format!("param d = {}1{}\nparam n = 1\n", "(".repeat(200), ")".repeat(200)), &["too-deep"]),
        // ---- names
        case("unknown_register", "mov o <- foo from prev\noutput o\n", &["unknown-register"]),
        case("unknown_name_in_param", &format!("param k = lam + 1\n{TAIL}"), &["unknown-name"]),
        case("unknown_name_in_aff", "aff o <- 2 * y + bogus\noutput o\n", &["unknown-name"]),
        case("param_is_not_register", "mov o <- n from prev\noutput o\n", &["unknown-register"]),
        case("duplicate_register", "reg a: scalar\nreg a: vec[2]\n" , &["duplicate-declaration", "missing-output"]),
        case("duplicate_param", "param n = 4\n" , &["duplicate-declaration", "missing-output"]),
        case("register_named_builtin", &format!("reg x: scalar\n{TAIL}"), &["duplicate-declaration"]),
        case("decl_in_loop", &format!("for i in 1..=2 {{\n  reg t: scalar\n}}\n{TAIL}"), &["decl-in-loop"]),
        // ---- parameters and --set
        raw("missing_param", &format!("param n = 3\n{TAIL}"), &["missing-param"]),
        raw("bad_param_zero", &format!("param d = 0\nparam n = 3\n{TAIL}"), &["bad-param"]),
        raw("bad_param_real", &format!("param d = 2.5\nparam n = 3\n{TAIL}"), &["bad-param"]),
        case("integer_overflow", &format!("param k = 9223372036854775807 + 1\n{TAIL}"), &["const-arith"]),
        case("division_by_zero", &format!("param k = 1 / (n - 3)\n{TAIL}"), &["const-arith"]),
        with_sets(case("unknown_override", TAIL, &["unknown-override"]), &[("lambda", "0.5")]),
        with_sets(case("unparsable_override", TAIL, &["bad-override"]), &[("n", "3x")]),
        with_sets(case("override_not_integer", TAIL, &["int-override"]), &[("n", "2.5")]),
        with_sets(case("override_twice", TAIL, &["duplicate-override"]), &[("n", "4"), ("n", "5")]),
        // ---- loops
        case("empty_range", "for i in 3..3 {\n  mov o <- y from prev\n}\noutput o\n", &["empty-range", "use-before-write"]),
        case("reversed_range", &format!("for i in 3..=1 {{\n  mov t <- y from prev\n}}\n{TAIL}"), &["empty-range"]),
        case("too_large", &format!("for i in 1..=1000000 {{\n  mov t <- y from prev\n}}\n{TAIL}"), &["too-large"]),
        // ---- use before write
        case("use_before_write", "mov a <- b from prev\nmov b <- y from prev\noutput a\n", &["use-before-write"]),
        case(
            "use_before_write_in_loop",
            "for i in 1..=n {\n  mov a <- b from prev\n  mov b <- y from prev\n}\noutput a\n",
            &["use-before-write"],
        ),
        case("output_never_written", "reg o: scalar\noutput o\n", &["use-before-write"]),
        // ---- writes to inputs
        case("write_to_input", "mov x <- x from prev\nmov o <- y from prev\noutput o\n", &["write-to-input"]),
        // ---- shapes
        case("shape_mismatch_mov", "reg v: vec[2]\nmov v <- y from prev\noutput y\n", &["shape-mismatch"]),
        case("shape_mismatch_mul", "mul p <- x * x\noutput p\n", &["shape-mismatch"]),
        case("shape_mismatch_aff_scalar", "reg s: scalar\naff s <- 2 * x\noutput s\n", &["shape-mismatch"]),
        case("shape_mismatch_aff_matrix", "reg s: scalar\naff s <- [[1], [2]] * x\noutput s\n", &["shape-mismatch"]),
        case("shape_mismatch_aff_bias", "reg v: vec[2]\naff v <- x + [1, 2, 3]\nmul o <- x^T * v\noutput o\n", &["shape-mismatch"]),
        case("shape_mismatch_div", "reg q: scalar\nassume one >= 1\ndiv q <- x / |one|\noutput q\n", &["shape-mismatch"]),
        case("non_scalar_divisor", "div q <- y / |x|\nassume x >= 1\noutput q\n", &["non-scalar-divisor"]),
        case("output_not_scalar", "mov v <- x from prev\noutput v\n", &["output-not-scalar"]),
        case("bad_aff_term", "mov a <- y from prev\naff o <- a * a\noutput o\n", &["bad-aff-term"]),
        case("cannot_infer", "aff m <- I\noutput y\n", &["cannot-infer"]),
        // ---- divisors
        case("divisor_without_assumption", "aff s <- y + 1\ndiv o <- y / |s|\noutput o\n", &["divisor-assumption"]),
        case(
            "divisor_assumption_allows_zero",
            "aff s <- y + 1\nassume s >= 0\ndiv o <- y / |s|\noutput o\n",
            &["divisor-assumption"],
        ),
        case("empty_assumption", &format!("assume y in [3, 1]\n{TAIL}"), &["empty-assumption"]),
        // ---- columns
        case("col_beyond_last", "mov o <- y from col(2*n + 1)\noutput o\n", &["col-range"]),
        case("col_negative", "mov o <- y from col(0 - 1)\noutput o\n", &["col-range"]),
        case(
            "col_beyond_last_in_loop",
            "for i in 1..=n+1 {\n  mov o <- y from col(2*i)\n}\noutput o\n",
            &["col-range"],
        ),
        // ---- pins
        case("pin_overlaps_inputs", &format!("reg p: vec[2] @ 1\n{TAIL}"), &["pin-range"]),
        case("pin_negative", &format!("reg p: scalar @ 0 - 5\n{TAIL}"), &["pin-range"]),
        case("pin_too_high", &format!("reg p: vec[2] @ 65535\n{TAIL}"), &["pin-range"]),
        case(
            "pin_collision",
            "reg a: vec[2] @ 10\nreg b: scalar @ 11\nmov a <- x from prev\nmov b <- y from prev\nmul o <- a^T * a\naff o <- o + b\noutput o\n",
            &["pin-collision"],
        ),
        // ---- output
        case("missing_output", "mov o <- y from prev\n", &["missing-output"]),
        case("duplicate_output", "mov o <- y from prev\noutput o\noutput o\n", &["duplicate-output"]),
        // ---- several errors at once: every one is reported
        case(
            "many_errors",
            "reg v: vec[3]\nmov v <- x from prev\nmov w <- nope from col(99)\nmul p <- x * x\ndiv q <- y / |one|\nmov y <- one from prev\noutput v\noutput q\n",
            &[
                "shape-mismatch",
                "unknown-register",
                "col-range",
                "shape-mismatch",
                "divisor-assumption",
                "write-to-input",
                "output-not-scalar",
                "duplicate-output",
            ],
        ),
        // ---- aff selections and unit vectors
        case(
            "aff_index_out_of_range",
            "reg m: mat[2, 3]\nreg v: vec[3]\nmov w <- x from prev\naff v <- [1, 2, 3]\nmul m <- w * v^T\naff r <- m[2, :]\nmov o <- y from prev\noutput o\n",
            &["index-range"],
        ),
        case(
            "aff_index_loop_var_out_of_range",
            "mov w <- x from prev\nreg c: vec[2]\nfor k in 0..=2 {\naff c <- 2 * w[k]\n}\nmov o <- y from prev\noutput o\n",
            &["index-range"],
        ),
        case(
            "aff_unit_non_vector_dst",
            "reg m: mat[2, 2]\naff m <- e(0)\nmov o <- y from prev\noutput o\n",
            &["shape-mismatch"],
        ),
        case(
            "aff_unit_out_of_range",
            "reg c: vec[2]\naff c <- 1 - e(2)\nmov o <- y from prev\noutput o\n",
            &["index-range"],
        ),
        case(
            "aff_matrix_one_index",
            "mov w <- x from prev\nmul m <- w * w^T\naff r <- m[0]\nmov o <- y from prev\noutput o\n",
            &["bad-index"],
        ),
    ]
}

#[test]
fn every_reject_case_is_rejected_with_its_diagnostics() {
    let mut failures = Vec::new();
    for c in reject_cases() {
        let file = format!("{}.icl", c.name);
        match load_program(&file, &c.src, &c.sets) {
            Ok(_) => failures.push(format!("{}: accepted", c.name)),
            Err(d) => {
                let codes = d.codes();
                if codes != c.codes {
                    failures.push(format!(
                        "{}: codes {:?}, expected {:?}\n{}",
                        c.name,
                        codes,
                        c.codes,
                        d.render()
                    ));
                }
                let rendered = d.render();
                // Every located diagnostic names file:line:col and draws carets.
                assert!(
                    rendered.contains("^"),
                    "{}: no caret line\n{rendered}",
                    c.name
                );
                assert!(
                    rendered.contains(&format!("{file}:")) || rendered.contains("<command line>:"),
                    "{}: no location\n{rendered}",
                    c.name
                );
                insta::with_settings!({snapshot_path => "../snapshots", prepend_module_to_snapshot => true}, {
                    insta::assert_snapshot!(c.name, rendered);
                });
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn case_names_are_unique() {
    let cases = reject_cases();
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), cases.len());
}

#[test]
fn io_error_is_a_diagnostic() {
    let e =
        icl::front::load_file(std::path::Path::new("/nonexistent/dir/prog.icl"), &[]).unwrap_err();
    assert_eq!(e.codes(), vec!["io"]);
    assert!(e
        .render()
        .starts_with("/nonexistent/dir/prog.icl: error: cannot read"));
}

// ------------------------------------------------------------------------------- must accept

fn accept(src: &str, sets: &[(&str, &str)]) -> icl::ir::Program {
    let sets: Vec<(String, String)> = sets
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    match load_program("ok.icl", src, &sets) {
        Ok(p) => p,
        Err(d) => panic!("rejected:\n{}", d.render()),
    }
}

#[test]
fn aff_selections_and_unit_vectors() {
    // d = 2; m = w·[1 2 3] is mat[2, 3] (row-major: element (i, j) is 3i + j).
    let p = accept(
        "param d = 2\nparam n = 1\n\
         reg m: mat[2, 3]\nreg r: vec[3]\nreg c: vec[2]\nreg v: vec[3]\n\
         mov w <- x from prev\n\
         aff v <- [1, 2, 3]\n\
         mul m <- w * v^T\n\
         for k in 1..=1 {\n\
         aff r <- 2 * m[k, :] + e(k)\n\
         }\n\
         aff c <- m[:, 2] - e(0)\n\
         aff s <- m[1, 0] - w[1]\n\
         output s\n",
        &[],
    );
    let id = |n: &str| p.reg_by_name(n).unwrap();
    let (m, w) = (id("m"), id("w"));
    let whole = |reg| Operand {
        reg,
        transposed: false,
    };
    // aff r <- 2 * m[1, :] + e(1): r_j = 2 m_{1j}: coef (3×6) has 2 at (j, 3 + j); bias e_1.
    let OpKind::Aff { dst, terms, bias } = &p.ops[3].kind else {
        panic!("{:?}", p.ops[3].kind)
    };
    assert_eq!(*dst, id("r"));
    assert_eq!(terms.len(), 1);
    assert_eq!(terms[0].src, whole(m));
    let mut want = vec![0.0; 18];
    for j in 0..3 {
        want[j * 6 + 3 + j] = 2.0;
    }
    assert_eq!(terms[0].coef, want);
    assert_eq!(bias, &vec![0.0, 1.0, 0.0]);
    // aff c <- m[:, 2] - e(0): c_i = m_{i2} = element 3i + 2; bias −e_0.
    let OpKind::Aff { dst, terms, bias } = &p.ops[4].kind else {
        panic!()
    };
    assert_eq!(*dst, id("c"));
    assert_eq!(terms[0].src, whole(m));
    let mut want = vec![0.0; 12];
    want[2] = 1.0; // row 0 reads element (0, 2) = 2
    want[6 + 5] = 1.0; // row 1 reads element (1, 2) = 5
    assert_eq!(terms[0].coef, want);
    assert_eq!(bias, &vec![-1.0, 0.0]);
    // aff s <- m[1, 0] - w[1]: one-hot at element 3 of m, −1 at element 1 of w.
    let OpKind::Aff { dst, terms, bias } = &p.ops[5].kind else {
        panic!()
    };
    assert_eq!(*dst, id("s"));
    assert_eq!(terms.len(), 2);
    assert_eq!(terms[0].src, whole(m));
    assert_eq!(terms[0].coef, vec![0.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
    assert_eq!(terms[1].src, whole(w));
    assert_eq!(terms[1].coef, vec![0.0, -1.0]);
    assert_eq!(bias, &vec![0.0]);
}

#[test]
fn aff_coefficients_expand_densely() {
    // d = 2. w is vec[2], m is mat[2, 2].
    let p = accept(
        "param d = 2\nparam n = 1\nparam W = [[1, 2], [3, 4]]\nparam lam = 0.5\n\
         reg w: vec[2]\nreg m: mat[2, 2]\nreg s: scalar\n\
         mov w <- x from prev\n\
         mul m <- w * w^T\n\
         aff s <- y - 3\n\
         aff w <- (2*lam) * w - I * x + W * x + W^T * x + s + [10, 20]\n\
         aff m <- m^T - 2 * m + (1/lam) * I\n\
         mul o <- w^T * w\n\
         output o\n",
        &[],
    );
    let id = |n: &str| p.reg_by_name(n).unwrap();
    let (w, m, s, x) = (id("w"), id("m"), id("s"), id("x"));
    // aff s <- y - 3: one term y with coef [1], bias [-3].
    let OpKind::Aff { dst, terms, bias } = &p.ops[2].kind else {
        panic!("op 2 is {:?}", p.ops[2].kind)
    };
    assert_eq!(*dst, s);
    assert_eq!(terms.len(), 1);
    assert_eq!(
        terms[0].src,
        Operand {
            reg: id("y"),
            transposed: false
        }
    );
    assert_eq!(terms[0].coef, vec![1.0]);
    assert_eq!(bias, &vec![-3.0]);

    let OpKind::Aff { dst, terms, bias } = &p.ops[3].kind else {
        panic!()
    };
    assert_eq!(*dst, w);
    assert_eq!(terms.len(), 5);
    // (2·0.5)·w: scalar 1 → 1·I₂.
    assert_eq!(
        terms[0].src,
        Operand {
            reg: w,
            transposed: false
        }
    );
    assert_eq!(terms[0].coef, vec![1.0, 0.0, 0.0, 1.0]);
    // − I·x: −I₂.
    assert_eq!(
        terms[1].src,
        Operand {
            reg: x,
            transposed: false
        }
    );
    assert_eq!(terms[1].coef, vec![-1.0, 0.0, 0.0, -1.0]);
    // W·x: W row-major.
    assert_eq!(terms[2].coef, vec![1.0, 2.0, 3.0, 4.0]);
    // Wᵀ·x: the constant is transposed, [[1,3],[2,4]].
    assert_eq!(terms[3].coef, vec![1.0, 3.0, 2.0, 4.0]);
    // + s: scalar source broadcast into both elements: a 2×1 column of ones.
    assert_eq!(
        terms[4].src,
        Operand {
            reg: s,
            transposed: false
        }
    );
    assert_eq!(terms[4].coef, vec![1.0, 1.0]);
    assert_eq!(bias, &vec![10.0, 20.0]);

    // aff m <- m^T - 2*m + (1/lam)*I: transposed source keeps coef I₄ over the flattened mᵀ
    // (the consumer maps indices with operand_index); bias = 2·I₂ flattened.
    let OpKind::Aff { dst, terms, bias } = &p.ops[4].kind else {
        panic!()
    };
    assert_eq!(*dst, m);
    assert_eq!(
        terms[0].src,
        Operand {
            reg: m,
            transposed: true
        }
    );
    let i4: Vec<f64> = (0..16)
        .map(|k| if k % 5 == 0 { 1.0 } else { 0.0 })
        .collect();
    assert_eq!(terms[0].coef, i4);
    assert_eq!(
        terms[1].src,
        Operand {
            reg: m,
            transposed: false
        }
    );
    assert_eq!(
        terms[1].coef,
        i4.iter().map(|v| -2.0 * v).collect::<Vec<_>>()
    );
    assert_eq!(bias, &vec![2.0, 0.0, 0.0, 2.0]);

    // mul m <- w * w^T
    assert_eq!(
        p.ops[1].kind,
        OpKind::Mul {
            dst: m,
            a: Operand {
                reg: w,
                transposed: false
            },
            b: Operand {
                reg: w,
                transposed: true
            }
        }
    );
    // Inferred o: (1×2)·(2×1) = scalar.
    assert_eq!(p.reg(p.output).shape, Shape::SCALAR);
    assert_eq!(p.reg(p.output).name, "o");
}

#[test]
fn loops_unroll_with_columns_iterations_and_text() {
    let p = accept(
        "param d = 3\nparam n = 4\n\
         reg xi: vec[d]\n\
         for i in 1..=n {\n  mov xi <- x from col(2*i - 2)\n  assume c >= 1\n  aff c <- count + 1\n}\n\
         for k in 0..2 {\n  for j in k..=1 {\n    mov t <- y from col(j + 2*k)\n  }\n}\n\
         div o <- t / |c|\noutput o\n",
        &[],
    );
    // 4 × (mov, aff) + (k=0: j=0,1; k=1: j=1) movs + div.
    assert_eq!(p.ops.len(), 4 * 2 + 3 + 1);
    for i in 1..=4usize {
        let op = &p.ops[2 * (i - 1)];
        let OpKind::Mov { pattern, .. } = op.kind else {
            panic!()
        };
        // x̃_i is column 2i − 2.
        assert_eq!(pattern, Pattern::Col(2 * i - 2));
        assert_eq!(op.iteration, vec![("i".to_string(), i as i64)]);
        assert_eq!(op.text, "mov xi <- x from col(2*i - 2)");
        assert_eq!(op.span.line, 5);
        assert_eq!(op.span.col, 3);
    }
    let cols: Vec<(Pattern, Vec<(String, i64)>)> = p.ops[8..11]
        .iter()
        .map(|op| match op.kind {
            OpKind::Mov { pattern, .. } => (pattern, op.iteration.clone()),
            _ => panic!(),
        })
        .collect();
    let it = |k: i64, j: i64| vec![("k".to_string(), k), ("j".to_string(), j)];
    assert_eq!(
        cols,
        vec![
            (Pattern::Col(0), it(0, 0)),
            (Pattern::Col(1), it(0, 1)),
            (Pattern::Col(3), it(1, 1))
        ]
    );
    // The unrolled copies of `assume c >= 1` are one assumption.
    assert_eq!(p.assumptions.len(), 1);
    assert_eq!(p.assumptions[0].reg, p.reg_by_name("c").unwrap());
    assert_eq!(
        p.assumptions[0].bound,
        Bound::Range {
            lo: 1.0,
            hi: f64::INFINITY
        }
    );
    assert_eq!(p.assumptions[0].text, "assume c >= 1");
    // Inputs read: y, x, count — listed first in Builtin order; `one`, `is_x`, `is_y` absent.
    let kinds: Vec<&RegKind> = p.registers.iter().map(|r| &r.kind).collect();
    assert_eq!(
        &kinds[..3],
        &[
            &RegKind::Input(Builtin::Y),
            &RegKind::Input(Builtin::X),
            &RegKind::Input(Builtin::Count)
        ]
    );
    assert!(kinds[3..].iter().all(|k| **k == RegKind::Work));
    assert_eq!(p.reg(p.reg_by_name("x").unwrap()).shape, Shape::vec(3));
    assert_eq!(p.reg(p.reg_by_name("xi").unwrap()).shape, Shape::vec(3));
    assert_eq!(p.columns(), 9);
}

#[test]
fn params_overrides_and_pins() {
    let p = accept(
        "param d = 2\nparam n = 3\nparam D = d * d\nparam lambda = 0.5\nparam half = n / 2\n\
         param w0 = [0.5, -0.25]\n\
         reg A: mat[d, d] @ d + 1\nreg B: vec[D] @ d + 1\n\
         aff A <- (1/lambda) * I\nmul u <- A * x\nmul s <- x^T * u\n\
         aff B <- [1, 2, 3, 4, 5, 6, 7, 8, 9]\naff o <- w0^T * u\noutput o\n",
        &[("d", "3"), ("lambda", "0.25"), ("w0", "[1, 2, 3]")],
    );
    assert_eq!(p.d, 3);
    assert_eq!(p.n, 3);
    assert_eq!(p.params["d"], ParamValue::Int(3));
    // D sees the overridden d.
    assert_eq!(p.params["D"], ParamValue::Int(9));
    assert_eq!(p.params["lambda"], ParamValue::Real(0.25));
    // 3/2 is not an integer: a real.
    assert_eq!(p.params["half"], ParamValue::Real(1.5));
    assert_eq!(
        p.params["w0"],
        ParamValue::Tensor {
            rows: 3,
            cols: 1,
            data: vec![1.0, 2.0, 3.0]
        }
    );
    assert_eq!(p.overrides[0], ("d".to_string(), "3".to_string()));
    let a = p.reg_by_name("A").unwrap();
    assert_eq!(p.reg(a).pinned, Some(4));
    assert_eq!(p.reg(a).shape, Shape::mat(3, 3));
    // A and B share rows 4..13 but A's last read (op 1) precedes B's first write (op 3).
    let OpKind::Aff { bias, terms, .. } = &p.ops[0].kind else {
        panic!()
    };
    assert!(terms.is_empty());
    assert_eq!(bias, &vec![4.0, 0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0, 4.0]);
    // w0ᵀ (1×3, overridden) as the coefficient of u: o is inferred scalar.
    let OpKind::Aff { terms, bias, .. } = &p.ops[4].kind else {
        panic!()
    };
    assert_eq!(terms[0].coef, vec![1.0, 2.0, 3.0]);
    assert_eq!(bias, &vec![0.0]);
    assert_eq!(p.reg(p.output).shape, Shape::SCALAR);
}

#[test]
fn mov_patterns_and_in_place() {
    let p = accept(
        "param d = 1\nparam n = 2\n\
         mov a <- y from mean(y)\nmov a <- a from prev\nmov b <- x from mean(x)\nmov c <- one from mean(all)\n\
         aff a <- a + b + c + is_x - is_y\nassume |a| >= 0.5\ndiv o <- a / |a|\noutput o\n",
        &[],
    );
    let pats: Vec<Pattern> = p
        .ops
        .iter()
        .filter_map(|op| match op.kind {
            OpKind::Mov { pattern, .. } => Some(pattern),
            _ => None,
        })
        .collect();
    assert_eq!(
        pats,
        vec![
            Pattern::Mean(ColumnSet::Y),
            Pattern::Prev,
            Pattern::Mean(ColumnSet::X),
            Pattern::Mean(ColumnSet::All)
        ]
    );
    let a = p.reg_by_name("a").unwrap();
    let OpKind::Mov { dst, src, .. } = p.ops[1].kind else {
        panic!()
    };
    assert_eq!((dst, src), (a, a));
    let OpKind::Aff { terms, .. } = &p.ops[4].kind else {
        panic!()
    };
    assert_eq!(
        terms.iter().map(|t| t.coef[0]).collect::<Vec<_>>(),
        vec![1.0, 1.0, 1.0, 1.0, -1.0]
    );
    assert_eq!(p.assumptions[0].bound, Bound::AbsAtLeast { lo: 0.5 });
    assert_eq!(
        p.ops[5].kind,
        OpKind::Div {
            dst: p.output,
            num: a,
            den: a
        }
    );
}

#[test]
fn sherman_morrison_program_is_accepted() {
    // Online ridge by Sherman–Morrison (LANGUAGE.md's example made complete): A₀ = I/λ,
    // A ← A − (A x)(A x)ᵀ / (1 + xᵀ A x) per example.
    let p = accept(
        "param d = 2\nparam n = 3\nparam lambda = 0.5\n\
         assume x in [-6, 6]\nassume y in [-50, 50]\n\
         reg A: mat[d, d]\nreg w: vec[d]\n\
         aff A <- (1/lambda) * I\naff w <- 0\nmov xp <- x from prev\n\
         for i in 1..=n {\n\
             mov xi <- xp from col(2*i - 1)\n\
             mul u <- A * xi\n\
             mul s <- xi^T * u\n\
             aff den <- s + 1\n\
             mul uu <- u * u^T\n\
             div q <- uu / |den|\n\
             aff A <- A - q\n\
         }\n\
         assume den >= 1\n\
         mul p <- w^T * x\noutput p\n",
        &[],
    );
    // 3 setup ops + 3 iterations × 7 + the read-out.
    assert_eq!(p.ops.len(), 3 + 3 * 7 + 1);
    let cols: Vec<Pattern> = p
        .ops
        .iter()
        .filter(|op| op.text.starts_with("mov xi"))
        .map(|op| match op.kind {
            OpKind::Mov { pattern, .. } => pattern,
            _ => panic!(),
        })
        .collect();
    // ỹ_i is column 2i − 1.
    assert_eq!(
        cols,
        vec![Pattern::Col(1), Pattern::Col(3), Pattern::Col(5)]
    );
    // aff w <- 0: no terms, zero bias of |w| = 2.
    assert_eq!(
        p.ops[1].kind,
        OpKind::Aff {
            dst: p.reg_by_name("w").unwrap(),
            terms: vec![],
            bias: vec![0.0, 0.0]
        }
    );
    // uu is inferred (2×1)·(1×2) = mat[2, 2]; q takes the numerator's shape.
    assert_eq!(p.reg(p.reg_by_name("uu").unwrap()).shape, Shape::mat(2, 2));
    assert_eq!(p.reg(p.reg_by_name("q").unwrap()).shape, Shape::mat(2, 2));
    assert_eq!(p.assumptions.len(), 3);
    let x = p.input(Builtin::X).unwrap();
    assert_eq!(p.assumptions[0].reg, x);
    assert_eq!(p.assumptions[0].bound, Bound::Range { lo: -6.0, hi: 6.0 });
}
