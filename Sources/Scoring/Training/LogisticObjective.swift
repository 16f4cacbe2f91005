import Dispatch

#if canImport(Glibc)
import Glibc
#endif

/// scikit-learn's regularized logistic loss over a row-major design matrix, and its gradient:
/// `mean(log-loss) + ½·l2·‖W‖²` (intercepts unpenalized), binary (one margin) or multinomial.
///
/// One evaluation is two passes over the design per thread: margins `Z = X·Wᵀ + b` (dot products)
/// and the gradient `Rᵀ·X` (the residuals scaled into each class's row), in SIMD lanes with
/// several accumulators. The rows are split over the cores; each thread keeps its own gradient
/// and scratch (allocated once, not per row or per evaluation), and the partial sums are added
/// in a fixed order, so a fit gives the same coefficients on every run.
package final class LogisticObjective: @unchecked Sendable {
    let design: UnsafeBufferPointer<Double>
    let labels: [Int32]
    let n: Int, width: Int, margins: Int
    let l2: Double
    package let threads: Int
    /// Per thread: its gradient (`margins × (width + 1)` values) and its loss.
    private let partialGradients: UnsafeMutablePointer<Double>
    private let partialLoss: UnsafeMutablePointer<Double>
    private var size: Int { margins * (width + 1) }

    /// `design`: `n × width` values, row-major; `labels`: each row's class index.
    package init(design: UnsafeBufferPointer<Double>, labels: [Int32], width: Int, margins: Int, l2: Double, threads: Int) {
        self.design = design
        self.labels = labels
        n = labels.count
        self.width = width
        self.margins = margins
        self.l2 = l2
        // Threads pay off only with enough work each.
        self.threads = max(1, min(threads, n * width * margins / 200_000))
        partialGradients = .allocate(capacity: self.threads * margins * (width + 1))
        partialLoss = .allocate(capacity: self.threads)
    }

    deinit {
        partialGradients.deallocate()
        partialLoss.deallocate()
    }

    /// The objective at `params` (`margins` rows of `width` coefficients then the intercept); the
    /// gradient goes to `gradient`.
    package func evaluate(_ params: [Double], _ gradient: inout [Double]) -> Double {
        let stride = width + 1
        let size = size
        params.withUnsafeBufferPointer { p in
            if threads == 1 { return partialLoss[0] = rows(0..<n, p.baseAddress!, partialGradients) }
            let chunk = (n + threads - 1) / threads
            // Read-only for the duration of the call, which waits for every thread.
            nonisolated(unsafe) let parameters = p.baseAddress!
            DispatchQueue.concurrentPerform(iterations: threads) { t in
                partialLoss[t] = rows(min(n, t * chunk)..<min(n, (t + 1) * chunk), parameters, partialGradients + t * size)
            }
        }
        var loss = 0.0
        for t in 0..<threads { loss += partialLoss[t] }
        for i in gradient.indices { gradient[i] = 0 }
        for t in 0..<threads {
            let part = partialGradients + t * size
            for i in gradient.indices { gradient[i] += part[i] }
        }
        let scale = 1 / Double(n)
        var penalty = 0.0
        for k in 0..<margins {
            for j in 0..<width {
                let i = k * stride + j
                gradient[i] = gradient[i] * scale + l2 * params[i]
                penalty += params[i] * params[i]
            }
            gradient[k * stride + width] *= scale
        }
        return loss * scale + 0.5 * l2 * penalty
    }

    /// The summed log-loss of `range`'s rows; their (unscaled) gradient goes to `g`, which it zeroes first.
    private func rows(_ range: Range<Int>, _ params: UnsafePointer<Double>, _ g: UnsafeMutablePointer<Double>) -> Double {
        let stride = width + 1
        let m = margins
        g.update(repeating: 0, count: m * stride)
        guard !range.isEmpty else { return 0 }
        return withUnsafeTemporaryAllocation(of: Double.self, capacity: max(m, 2)) { z in
            let z = z.baseAddress!
            var loss = 0.0
            for r in range {
                let row = design.baseAddress! + r * width
                let y = Int(labels[r])
                for k in 0..<m { z[k] = params[k * stride + width] + Self.dot(row, params + k * stride, width) }
                if m == 1 {
                    let s = z[0]
                    // softplus(s) − y·s, written to stay finite for large |s|.
                    loss += (s > 0 ? s + log1p(exp(-s)) : log1p(exp(s))) - (y == 1 ? s : 0)
                    z[0] = 1 / (1 + exp(-s)) - (y == 1 ? 1 : 0)
                } else {
                    var top = -Double.infinity
                    for k in 0..<m { top = max(top, z[k]) }
                    var total = 0.0
                    let zy = z[y]
                    for k in 0..<m {
                        z[k] = exp(z[k] - top)
                        total += z[k]
                    }
                    loss += log(total) + top - zy
                    for k in 0..<m { z[k] = z[k] / total - (k == y ? 1 : 0) }
                }
                for k in 0..<m {
                    let residual = z[k]
                    if residual == 0 { continue }
                    Self.axpy(residual, row, g + k * stride, width)
                    g[k * stride + width] += residual
                }
            }
            return loss
        }
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ count: Int) -> Double {
        var s0 = SIMD4<Double>(), s1 = SIMD4<Double>(), s2 = SIMD4<Double>(), s3 = SIMD4<Double>()
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        var i = 0
        while i + 16 <= count {
            let o = i * 8
            s0 += ra.loadUnaligned(fromByteOffset: o, as: SIMD4<Double>.self) * rb.loadUnaligned(fromByteOffset: o, as: SIMD4<Double>.self)
            s1 += ra.loadUnaligned(fromByteOffset: o + 32, as: SIMD4<Double>.self) * rb.loadUnaligned(fromByteOffset: o + 32, as: SIMD4<Double>.self)
            s2 += ra.loadUnaligned(fromByteOffset: o + 64, as: SIMD4<Double>.self) * rb.loadUnaligned(fromByteOffset: o + 64, as: SIMD4<Double>.self)
            s3 += ra.loadUnaligned(fromByteOffset: o + 96, as: SIMD4<Double>.self) * rb.loadUnaligned(fromByteOffset: o + 96, as: SIMD4<Double>.self)
            i += 16
        }
        while i + 4 <= count {
            s0 += ra.loadUnaligned(fromByteOffset: i * 8, as: SIMD4<Double>.self) * rb.loadUnaligned(fromByteOffset: i * 8, as: SIMD4<Double>.self)
            i += 4
        }
        var sum = ((s0 + s1) + (s2 + s3)).sum()
        while i < count {
            sum += a[i] * b[i]
            i += 1
        }
        return sum
    }

    /// `y += a·x` over `count` values.
    @inline(__always)
    static func axpy(_ a: Double, _ x: UnsafePointer<Double>, _ y: UnsafeMutablePointer<Double>, _ count: Int) {
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        let va = SIMD4<Double>(repeating: a)
        var i = 0
        while i + 8 <= count {
            let o = i * 8
            ry.storeBytes(of: ry.loadUnaligned(fromByteOffset: o, as: SIMD4<Double>.self) + va * rx.loadUnaligned(fromByteOffset: o, as: SIMD4<Double>.self),
                          toByteOffset: o, as: SIMD4<Double>.self)
            ry.storeBytes(of: ry.loadUnaligned(fromByteOffset: o + 32, as: SIMD4<Double>.self) + va * rx.loadUnaligned(fromByteOffset: o + 32, as: SIMD4<Double>.self),
                          toByteOffset: o + 32, as: SIMD4<Double>.self)
            i += 8
        }
        while i < count {
            y[i] += a * x[i]
            i += 1
        }
    }
}
