# Reference values pinned in tests/stats_reference.rs. Run: python3 benches/reference_values.py
# Needs: pip install numpy scipy statsmodels
import numpy as np, math
from scipy import stats, integrate
from statsmodels.stats.proportion import proportions_ztest, confint_proportions_2indep
from statsmodels.stats.multitest import multipletests
np.set_printoptions(precision=17)
# Welch
mc, vc, nc, mt, vt, nt = 10.0, 4.0, 1000, 10.3, 5.0, 1200
r = stats.ttest_ind_from_stats(mt, math.sqrt(vt), nt, mc, math.sqrt(vc), nc, equal_var=False)
se = math.sqrt(vc/nc+vt/nt); df = (vc/nc+vt/nt)**2/((vc/nc)**2/(nc-1)+(vt/nt)**2/(nt-1))
q = stats.t.ppf(0.975, df)
print("welch p", repr(r.pvalue), "ci", repr(0.3-q*se), repr(0.3+q*se), "df", df)
# two proportions
z, p = proportions_ztest([558, 505], [4988, 5012])
lo, hi = confint_proportions_2indep(558, 4988, 505, 5012, method='wald', compare='diff', alpha=0.05)
print("prop p", repr(p), "ci", repr(lo), repr(hi))
chi2 = stats.chi2_contingency([[558, 4988-558],[505, 5012-505]], correction=False)
print("chi2 p", repr(chi2.pvalue))
# delta method relative lift
pc, pt = 505/5012, 558/4988
vmc, vmt = pc*(1-pc)/5012, pt*(1-pt)/4988
rel = pt/pc-1; var = vmt/pc**2 + pt**2*vmc/pc**4; h = stats.norm.ppf(0.975)*math.sqrt(var)
print("rel", repr(rel), repr(rel-h), repr(rel+h))
# Beta-binomial by numerical integration (independent of the closed form)
ac, bc, at, bt = 1+505, 1+5012-505, 1+558, 1+4988-558
f = stats.beta(at, bt); g = stats.beta(ac, bc)
lo_, hi_ = 0.05, 0.18
prob = integrate.quad(lambda x: f.pdf(x)*g.cdf(x), lo_, hi_, epsabs=1e-14, epsrel=1e-12, limit=200)[0]
gplus = stats.beta(ac+1, bc); fplus = stats.beta(at+1, bt)
gain_t = integrate.quad(lambda x: f.pdf(x)*(x*g.cdf(x) - g.mean()*gplus.cdf(x)), lo_, hi_, epsabs=1e-16, epsrel=1e-12, limit=200)[0]
gain_c = integrate.quad(lambda y: g.pdf(y)*(y*f.cdf(y) - f.mean()*fplus.cdf(y)), lo_, hi_, epsabs=1e-16, epsrel=1e-12, limit=200)[0]
print("bayes prob", repr(prob), "loss_control", repr(gain_t), "loss_treatment", repr(gain_c))
# small counts too
f2 = stats.beta(1+3, 1+10-3); g2 = stats.beta(1+7, 1+12-7)
print("bayes small", repr(integrate.quad(lambda x: f2.pdf(x)*g2.cdf(x), 0, 1, epsabs=1e-15, epsrel=1e-13)[0]))
# normal posterior
d, v = 0.3, vc/nc+vt/nt; s = math.sqrt(v); zz = d/s
print("normal prob", repr(stats.norm.cdf(zz)), "lossc", repr(s*stats.norm.pdf(zz)+d*stats.norm.cdf(zz)), "losst", repr(s*stats.norm.pdf(zz)-d*stats.norm.cdf(-zz)))
# CUPED on deterministic data
def data(n, treat, off):
    out=[]
    for i in range(n):
        x = ((i*37+off) % 101)/10.0
        y = 2 + 0.5*x + (((i*53+off) % 17) - 8)/4.0 + (0.3 if treat else 0.0)
        out.append((y,x))
    return out
c = data(400, False, 0); t = data(450, True, 11)
allv = np.array(c+t); y=allv[:,0]; x=allv[:,1]
theta = np.cov(y, x, ddof=1)[0,1]/np.var(x, ddof=1)
mx = x.mean()
ac_ = np.array([yy-theta*(xx-mx) for yy,xx in c]); at_ = np.array([yy-theta*(xx-mx) for yy,xx in t])
vr = 1 - np.var(np.concatenate([ac_,at_]), ddof=0, mean=y.mean())/np.var(y, ddof=0) if False else 1 - np.sum((np.concatenate([ac_,at_])-y.mean())**2)/np.sum((y-y.mean())**2)
w = stats.ttest_ind(at_, ac_, equal_var=False)
print("cuped theta", repr(theta), "vr", repr(vr), "diff", repr(at_.mean()-ac_.mean()), "p", repr(w.pvalue))
# Holm / BH
ps = [0.01, 0.04, 0.03, 0.005, 0.2]
print("holm", [repr(v) for v in multipletests(ps, method='holm')[1]])
print("bh", [repr(v) for v in multipletests(ps, method='fdr_bh')[1]])
# power, binomial baseline 0.10, mde 5% rel, alpha .05, power .8, ratio 1
p1=0.10; p2=p1*1.05; zsum = stats.norm.ppf(0.975)+stats.norm.ppf(0.8)
print("power bin", repr(zsum**2*(p1*(1-p1)+p2*(1-p2))/(p2-p1)**2))
print("power cont ratio2", repr(zsum**2*(4.0+4.0/2)/(0.5)**2))
from statsmodels.stats.power import NormalIndPower
print("statsmodels NormalIndPower cont (d=0.25, ratio 1)", repr(NormalIndPower().solve_power(effect_size=0.25, alpha=0.05, power=0.8, ratio=1.0)), "closed", repr(zsum**2*2/0.25**2))
from scipy import optimize
def n_for(vc, vt, d, a, pw, r):
    z = stats.norm.ppf(1-a/2)
    f = lambda n: stats.norm.cdf(d/math.sqrt((vc+vt/r)/n)-z)+stats.norm.cdf(-d/math.sqrt((vc+vt/r)/n)-z)-pw
    return optimize.brentq(f, 1, 1e9, xtol=1e-12, rtol=1e-15)
print("power bin two-tail", repr(n_for(0.1*0.9, 0.105*0.895, 0.005, 0.05, 0.8, 1.0)))
print("statsmodels ratio 2", repr(NormalIndPower().solve_power(effect_size=0.25, alpha=0.05, power=0.8, ratio=2.0)))

# Wilson score interval of a proportion (the shadow mismatch rate): tests/stats_reference.rs
from scipy.stats import binomtest
for k, n, c in [(50, 1000, 0.95), (0, 20, 0.95), (3, 7, 0.99), (1000, 1000, 0.95)]:
    ci = binomtest(k, n).proportion_ci(confidence_level=c, method='wilson')
    print('wilson', k, n, c, repr(float(ci.low)), repr(float(ci.high)))
