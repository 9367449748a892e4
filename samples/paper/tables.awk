# tables.awk: results.csv (one row per run, from reproduce.sh) into
# tables.md: the paper's Tables 2 and 3 (mean +- sd over seeds, in percent,
# the paper's own numbers beside), TC and ET, the baselines, and the
# uncertainty quality. Variables: profile, seeds, samples, size, data.
# Columns: model,train_size,seed,dice_wt,iou_wt,dice_tc,iou_tc,dice_et,
# iou_et,ece,auroc_epistemic,dicekept_wt_epistemic,auroc_entropy,
# dicekept_wt_entropy,train_s,infer_s
BEGIN {
    split("53.1 56.6 60.8 64.3", pd_u, " "); split("50.6 51.3 53.8 56.5", pd_v, " "); split("50.2 52.1 54.4 58.9", pd_f, " ")
    split("48.4 50.6 53.1 55.8", pi_u, " "); split("46.7 48.8 50.8 52.8", pi_v, " "); split("47.2 50.4 52.6 54.3", pi_f, " ")
    split("5 10 15 20", sizes, " ")
    name["unet"] = "U-Net"; name["vnet"] = "V-Net"; name["fcn"] = "FCN-8s"
    name["unet-det"] = "U-Net deterministic (σ = 0)"; name["unet-mcdrop"] = "U-Net MC dropout (p = 0.1)"
    split("unet vnet fcn unet-det unet-mcdrop", models, " ")
}
NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
{
    k = $1 SUBSEP $2
    runs[k]++
    for (i = 4; i <= NF; i++) {
        if ($i == "nan" || $i == "") continue
        s[k, i] += $i; q[k, i] += $i * $i; n[k, i]++
    }
    tsec += $(col["train_s"]) + $(col["infer_s"])
}
# mean +- sd of column c of (model, size), scaled; "n/a" where no run measured it
function cell(m, sz, c, scale, digits,    k, mu, v) {
    k = m SUBSEP sz
    if (!((k, c) in n)) return runs[k] ? "n/a" : "—"
    mu = s[k, c] / n[k, c]
    if (n[k, c] < 2) return sprintf("%." digits "f", mu * scale)
    v = (q[k, c] - n[k, c] * mu * mu) / (n[k, c] - 1)
    return sprintf("%." digits "f ± %." digits "f", mu * scale, (v > 0 ? sqrt(v) : 0) * scale)
}
function backbone_table(title, c, pu, pv, pf,    j, sz) {
    print "\n### " title "\n"
    print "| Train size | U-Net | V-Net | FCN | paper: U-Net | paper: V-Net | paper: FCN |"
    print "|---|---|---|---|---|---|---|"
    for (j = 1; j <= 4; j++) {
        sz = sizes[j]
        printf "| %s | %s | %s | %s | %s | %s | %s |\n", sz, cell("unet", sz, c, 100, 1), cell("vnet", sz, c, 100, 1), cell("fcn", sz, c, 100, 1), pu[j], pv[j], pf[j]
    }
}
# one row per (train size, model) that ran: TC and ET, or the uncertainty measures
function model_rows(kind,    j, mi, m, sz) {
    for (j = 1; j <= 4; j++)
        for (mi = 1; mi <= 5; mi++) {
            m = models[mi]; sz = sizes[j]
            if (!runs[m SUBSEP sz]) continue
            if (kind == "tcet")
                printf "| %s | %s | %s (%s) | %s (%s) |\n", sz, name[m], cell(m, sz, col["dice_tc"], 100, 1), cell(m, sz, col["iou_tc"], 100, 1),
                    cell(m, sz, col["dice_et"], 100, 1), cell(m, sz, col["iou_et"], 100, 1)
            else
                printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", sz, name[m], cell(m, sz, col["ece"], 1, 4),
                    cell(m, sz, col["auroc_epistemic"], 1, 3), cell(m, sz, col["auroc_entropy"], 1, 3), cell(m, sz, col["dice_wt"], 100, 1),
                    cell(m, sz, col["dicekept_wt_epistemic"], 100, 1), cell(m, sz, col["dicekept_wt_entropy"], 100, 1)
        }
}
END {
    print "# The seed paper's Tables 2-3, reproduced"
    print ""
    printf "Profile `%s`: %s data", profile, data
    if (data == "generated") printf " (`make_brats`, %s voxels)", size
    printf "; 2D, latent 10, Adam 1e-3, batch 16, 0.9·Dice + 0.1·CE + KL; %d seed(s) per cell, %d Monte-Carlo samples at test time. ", seeds, samples
    print "Per-image scores (eq. 13-14: per test case, then averaged over the test set), in percent, mean ± sd over seeds; the paper's numbers are on BraTS 2018 and are beside ours for the shape (ordering, gain with train size), not the level. Training and inference took " int(tsec) " s summed over the runs (which run several at a time)."
    backbone_table("Table 2: mean Dice (whole tumour)", col["dice_wt"], pd_u, pd_v, pd_f)
    backbone_table("Table 3: mean IoU (whole tumour)", col["iou_wt"], pi_u, pi_v, pi_f)
    print "\n### Tumour core and enhancing tumour: Dice (IoU)\n"
    print "| Train size | model | TC | ET |"
    print "|---|---|---|---|"
    model_rows("tcet")
    print "\n### Baselines (U-Net): whole-tumour Dice\n"
    print "| Train size | variational | deterministic (σ = 0) | MC dropout (p = 0.1) |"
    print "|---|---|---|---|"
    for (j = 1; j <= 4; j++)
        printf "| %s | %s | %s | %s |\n", sizes[j], cell("unet", sizes[j], col["dice_wt"], 100, 1), cell("unet-det", sizes[j], col["dice_wt"], 100, 1),
            cell("unet-mcdrop", sizes[j], col["dice_wt"], 100, 1)
    print "\n### Uncertainty quality\n"
    print "ECE: 15 bins of the max-class mean probability. AUROC: how well the map ranks the wrong voxels above the right ones (0.5 = chance). Dice kept: WT Dice after discarding the 10% most uncertain voxels. All over the voxels either side labels. The deterministic network's mutual information is 0 everywhere, so its epistemic measures are n/a; its entropy is that of its one pass.\n"
    print "| Train size | model | ECE | AUROC, MI (epistemic) | AUROC, entropy | WT Dice | WT Dice kept, MI | WT Dice kept, entropy |"
    print "|---|---|---|---|---|---|---|---|"
    model_rows("uncertainty")
}
