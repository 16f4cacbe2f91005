/// Limited-memory BFGS (Nocedal & Wright, algorithm 7.4) with a backtracking
/// line search on the Armijo condition, for smooth convex objectives.
package struct LBFGS {
    package struct Configuration {
        package var memory = 10
        package var maximumIterations = 1000
        /// Stop when the largest gradient component is below this.
        package var gradientTolerance = 1e-10
        /// Or when an iteration improves the objective by less than this, relatively.
        package var functionTolerance = 1e-15

        package init() {}
    }

    package struct Result {
        package var x: [Double]
        package var value: Double
        package var iterations: Int
        package var converged: Bool
    }

    /// Minimizes `f`, which returns the value and writes the gradient into its second argument.
    package static func minimize(
        _ start: [Double], configuration: Configuration = .init(),
        _ f: ([Double], inout [Double]) -> Double
    ) -> Result {
        let n = start.count
        var x = start
        var g = [Double](repeating: 0, count: n)
        var fx = f(x, &g)
        var s: [[Double]] = []
        var y: [[Double]] = []
        var rho: [Double] = []
        var newX = x
        var newG = g
        var direction = [Double](repeating: 0, count: n)
        var alpha = [Double](repeating: 0, count: configuration.memory)

        for iteration in 0..<configuration.maximumIterations {
            if maxAbs(g) < configuration.gradientTolerance {
                return Result(x: x, value: fx, iterations: iteration, converged: true)
            }
            // Two-loop recursion: direction = -H g.
            for i in 0..<n { direction[i] = -g[i] }
            for j in stride(from: s.count - 1, through: 0, by: -1) {
                alpha[j] = rho[j] * dot(s[j], direction)
                axpy(-alpha[j], y[j], &direction)
            }
            if let lastS = s.last, let lastY = y.last {
                let gamma = dot(lastS, lastY) / dot(lastY, lastY)
                for i in 0..<n { direction[i] *= gamma }
            } else {
                let norm = dot(g, g).squareRoot()
                for i in 0..<n { direction[i] /= max(norm, 1) }
            }
            for j in 0..<s.count {
                let beta = rho[j] * dot(y[j], direction)
                axpy(alpha[j] - beta, s[j], &direction)
            }
            var slope = dot(g, direction)
            if slope >= 0 {
                // Not a descent direction (numerical trouble): restart from steepest descent.
                s.removeAll()
                y.removeAll()
                rho.removeAll()
                for i in 0..<n { direction[i] = -g[i] }
                slope = dot(g, direction)
            }

            var step = 1.0
            var fNew = 0.0
            var accepted = false
            for _ in 0..<60 {
                for i in 0..<n { newX[i] = x[i] + step * direction[i] }
                fNew = f(newX, &newG)
                if fNew.isFinite && fNew <= fx + 1e-4 * step * slope {
                    accepted = true
                    break
                }
                step *= 0.5
            }
            guard accepted else { return Result(x: x, value: fx, iterations: iteration, converged: false) }

            var sk = [Double](repeating: 0, count: n)
            var yk = [Double](repeating: 0, count: n)
            for i in 0..<n {
                sk[i] = newX[i] - x[i]
                yk[i] = newG[i] - g[i]
            }
            let sy = dot(sk, yk)
            if sy > 1e-300 {
                if s.count == configuration.memory {
                    s.removeFirst()
                    y.removeFirst()
                    rho.removeFirst()
                }
                s.append(sk)
                y.append(yk)
                rho.append(1 / sy)
            }
            let improvement = fx - fNew
            swap(&x, &newX)
            swap(&g, &newG)
            fx = fNew
            if improvement <= configuration.functionTolerance * max(abs(fx), 1) {
                // Converged in value (scipy's REL_REDUCTION_OF_F), as scikit-learn counts it.
                return Result(x: x, value: fx, iterations: iteration + 1, converged: true)
            }
        }
        return Result(x: x, value: fx, iterations: configuration.maximumIterations, converged: false)
    }

    private static func dot(_ a: [Double], _ b: [Double]) -> Double {
        var sum = 0.0
        for i in a.indices { sum += a[i] * b[i] }
        return sum
    }

    private static func axpy(_ a: Double, _ x: [Double], _ y: inout [Double]) {
        for i in x.indices { y[i] += a * x[i] }
    }

    private static func maxAbs(_ a: [Double]) -> Double {
        a.reduce(0) { max($0, abs($1)) }
    }
}
