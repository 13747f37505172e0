"""Reference values of the bandit section of `abgate analyze` (src/analyze/bandit/tests.rs),
computed independently with numpy and scipy: period-weighted means and intervals of a
hand-made log, P(best) of two Beta posteriors, and the SRM by period of the logs of
`srm_counts_returning_units_once_against_each_periods_shares` and
`srm_flags_units_that_do_not_follow_the_shares`.

    python3 benches/bandit_analysis_reference.py
"""
import numpy as np
from scipy import stats, integrate
z = stats.norm.ppf(0.975)
# D1: per period, per arm: list of per-unit values
conv = {0: {'a': [1]*3+[0]*7, 'b': [1]*6+[0]*4}, 1: {'a': [1]+[0]*4, 'b': [1]*12+[0]*8}}
rev = {0: {'a': [1.0,2.0,4.0]+[0.0]*7, 'b': [3.0,1.0,2.0,2.0,5.0]+[0.0]*5},
       1: {'a': [10.0]+[0.0]*4, 'b': [3.0]+[1.0]*11+[0.0]*8}}
N = {p: sum(len(v) for v in conv[p].values()) for p in conv}
tot = sum(N.values())
def est(data, arm, binomial):
    m = 0; v = 0
    for p in data:
        x = np.array(data[p][arm]); w = N[p]/tot
        mp = x.mean()
        s2 = mp*(1-mp) if binomial else x.var(ddof=1)
        m += w*mp; v += w*w*s2/len(x)
    return m, v
for name, data, binomial in [('conv', conv, True), ('rev', rev, False)]:
    for arm in 'ab':
        m, v = est(data, arm, binomial)
        print(name, arm, repr(m), repr(m - z*np.sqrt(v)), repr(m + z*np.sqrt(v)))
# P(best) two arms: Beta(1+s, 1+n-s), s = round(mean*n)
post = {}
for arm in 'ab':
    m, _ = est(conv, arm, True)
    n = sum(len(conv[p][arm]) for p in conv)
    s = round(m*n)
    post[arm] = (1+s, 1+n-s)
    print('posterior', arm, post[arm])
(a1,b1),(a2,b2) = post['a'], post['b']
pb = integrate.quad(lambda x: stats.beta.pdf(x,a2,b2)*stats.beta.cdf(x,a1,b1), 0, 1, epsabs=1e-13, epsrel=1e-12)[0]
print('P(b best)', repr(pb))
# D2: SRM that follows the shares, with returning units
shares = [[0.5,0.5],[0.3,0.7],[0.1,0.9]]
new = [[52,48],[28,72],[12,88]]
chi = sum(((np.array(o)-sum(o)*np.array(w))**2/(sum(o)*np.array(w))).sum() for o,w in zip(new, shares))
print('D2 chi2', repr(chi), 'p', repr(stats.chi2.sf(chi, 3)))
# the wrong count: every unit counted in every period it was exposed in (p0 units return in p1, p2)
per = [[52,48],[28+52,72+48],[12+52+28,88+48+72]]
chi_w = sum(((np.array(o)-sum(o)*np.array(w))**2/(sum(o)*np.array(w))).sum() for o,w in zip(per, shares))
print('D2 per-period-exposures chi2', repr(chi_w), 'p', repr(stats.chi2.sf(chi_w, 3)))
# D3: mismatch
shares3 = [[0.5,0.5],[0.2,0.8]]; new3 = [[50,50],[50,50]]
chi3 = sum(((np.array(o)-sum(o)*np.array(w))**2/(sum(o)*np.array(w))).sum() for o,w in zip(new3, shares3))
print('D3 chi2', repr(chi3), 'p', repr(stats.chi2.sf(chi3, 2)))
