"""``bench.hlo_facts`` on a small hand-written XLA:GPU module whose facts are counted by hand below."""

from bench import hlo_facts

# Entry parameters: a 3×3×64×64 kernel (36,864 elements), a batch of 8×56×56×64 activations and indices.
# Kernel-level: four fusions (a kernel transpose, an activation transpose, a max pool's backward scatter, a
# reduce-window) and a loss scatter-add fusion, two cuDNN convolutions, one cuBLAS call and one all-reduce. The
# reduction computations (%add, %max) are applied by other ops and are not kernels. (HLO lines stay whole.)
MODULE = """HloModule jit_step, is_scheduled=true, entry_computation_layout={(f32[3,3,64,64]{3,2,1,0})->f32[]}

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(f32[] %a, f32[] %b)
}

%max (a.1: bf16[], b.1: bf16[]) -> bf16[] {
  %a.1 = bf16[] parameter(0)
  %b.1 = bf16[] parameter(1)
  ROOT %m = bf16[] maximum(bf16[] %a.1, bf16[] %b.1)
}

%fused_kernel_transpose (param_0: f32[3,3,64,64]) -> bf16[64,64,3,3] {
  %param_0 = f32[3,3,64,64]{3,2,1,0} parameter(0)
  %convert = bf16[3,3,64,64]{3,2,1,0} convert(f32[3,3,64,64]{3,2,1,0} %param_0)
  ROOT %transpose.1 = bf16[64,64,3,3]{3,2,1,0} transpose(bf16[3,3,64,64]{3,2,1,0} %convert), dimensions={3,2,0,1}
}

%fused_activation_transpose (param_0.1: bf16[8,28,28,64]) -> bf16[8,64,28,28] {
  %param_0.1 = bf16[8,28,28,64]{3,2,1,0} parameter(0)
  ROOT %transpose.2 = bf16[8,64,28,28]{3,2,1,0} transpose(bf16[8,28,28,64]{3,2,1,0} %param_0.1), dimensions={0,3,1,2}
}

%fused_pool_backward (param_0.2: bf16[8,58,58,64], param_1.2: s32[100,4], param_2.2: bf16[100,1,1,1,1]) -> bf16[8,58,58,64] {
  %param_0.2 = bf16[8,58,58,64]{3,2,1,0} parameter(0)
  %param_1.2 = s32[100,4]{1,0} parameter(1)
  %param_2.2 = bf16[100,1,1,1,1]{4,3,2,1,0} parameter(2)
  ROOT %scatter.1 = bf16[8,58,58,64]{3,2,1,0} scatter(%param_0.2, %param_1.2, %param_2.2), update_window_dims={1,2,3,4}, inserted_window_dims={}, scatter_dims_to_operand_dims={0,1,2,3}, index_vector_dim=1, to_apply=%max, metadata={op_name="jit(step)/transpose(jvp(Net))/select_and_scatter_add"}
}

%fused_pool (param_0.3: bf16[8,56,56,64]) -> bf16[8,28,28,64] {
  %param_0.3 = bf16[8,56,56,64]{3,2,1,0} parameter(0)
  %constant = bf16[] constant(-inf)
  ROOT %reduce-window = bf16[8,28,28,64]{3,2,1,0} reduce-window(%param_0.3, %constant), window={size=1x2x2x1 stride=1x2x2x1}, to_apply=%max
}

%fused_loss_scatter (param_0.4: f32[8,400], param_1.4: s32[8,2], param_2.4: f32[8]) -> f32[8,400] {
  %param_0.4 = f32[8,400]{1,0} parameter(0)
  %param_1.4 = s32[8,2]{1,0} parameter(1)
  %param_2.4 = f32[8]{0} parameter(2)
  ROOT %scatter.2 = f32[8,400]{1,0} scatter(%param_0.4, %param_1.4, %param_2.4), update_window_dims={}, inserted_window_dims={0,1}, scatter_dims_to_operand_dims={0,1}, index_vector_dim=1, to_apply=%add, metadata={op_name="jit(step)/take_along_axis"}
}

ENTRY %main.9 (kernel.1: f32[3,3,64,64], clips.1: bf16[8,56,56,64], /*index=2*/idx.1: s32[100,4]) -> f32[] {
  %kernel.1 = f32[3,3,64,64]{3,2,1,0} parameter(0)
  %clips.1 = bf16[8,56,56,64]{3,2,1,0} parameter(1)
  %idx.1 = s32[100,4]{1,0} parameter(2)
  %kernel_t = bf16[64,64,3,3]{3,2,1,0} fusion(%kernel.1), kind=kInput, calls=%fused_kernel_transpose
  %pooled = bf16[8,28,28,64]{3,2,1,0} fusion(%clips.1), kind=kLoop, calls=%fused_pool
  %pooled_t = bf16[8,64,28,28]{3,2,1,0} fusion(%pooled), kind=kInput, calls=%fused_activation_transpose
  %cudnn-conv.1 = (bf16[8,64,28,28]{3,2,1,0}, u8[0]{0}) custom-call(%pooled_t, %kernel_t), window={size=3x3 pad=1_1x1_1}, dim_labels=bf01_oi01->bf01, custom_call_target="__cudnn$convForward"
  %cudnn-conv.2 = (bf16[8,4,56,56,64]{4,3,2,1,0}, u8[0]{0}) custom-call(%clips.1, %kernel.1), window={size=1x1x1}, dim_labels=b012f_o012i->b012f, custom_call_target="__cudnn$convBackwardInput"
  %gemm = (bf16[64,64]{1,0}, s8[1024]{0}) custom-call(%kernel_t, %kernel_t), custom_call_target="__cublas$lt$matmul"
  %pool_grad = bf16[8,58,58,64]{3,2,1,0} fusion(%clips.1, %idx.1, %clips.1), kind=kInput, calls=%fused_pool_backward
  %loss_grad = f32[8,400]{1,0} fusion(%clips.1, %idx.1, %clips.1), kind=kInput, calls=%fused_loss_scatter
  %zero = f32[] constant(0)
  %summed = (f32[8,400]{1,0}, f32[3,3,64,64]{3,2,1,0}) all-reduce(%loss_grad, %kernel.1), replica_groups={}, to_apply=%add
  %summed_loss = f32[8,400]{1,0} get-tuple-element(%summed), index=0
  ROOT %r = f32[] reduce(%summed_loss, %zero), dimensions={0,1}, to_apply=%add
}
"""


def test_facts_of_a_hand_counted_module():
  facts = hlo_facts.facts(MODULE)
  assert facts['convolutions'] == 2
  assert facts['convolution_layouts'] == {'2D channels-first': 1, '3D channels-last': 1}
  assert facts['other_custom_calls'] == {'__cublas$lt$matmul': 1}
  assert facts['fusions'] == 5
  # The kernel's transpose has the 36,864 elements of a parameter; the pooled activations' 8·64·28·28 do not.
  assert facts['state_transposes'] == 1
  assert facts['activation_transposes'] == 1
  assert facts['activation_transpose_gb'] == 8 * 64 * 28 * 28 * 2 / 1e9
  assert facts['scatters'] == 2 and facts['max_pool_scatters'] == 1
  assert facts['reduce_windows'] == 1
  # One all-reduce of a tuple: the loss gradient (8·400 f32) and the kernel (36,864 f32).
  assert facts['collectives'] == {'all-reduce': 1}
  assert facts['collective_mib'] == (8 * 400 + 36864) * 4 / 2**20


def test_conv_layout_reads_the_input_labels():
  assert hlo_facts.conv_layout('dim_labels=b01f_o01i->b01f,') == '2D channels-last'
  assert hlo_facts.conv_layout('dim_labels=bf012_oi012->bf012,') == '3D channels-first'
  assert hlo_facts.conv_layout('window={size=1x1}') == 'unknown'


# A loop of 12 passes (the chunked attention's shape of program), whose body XLA's cost analysis counts once.
LOOP = """HloModule jit_loop, is_scheduled=true

%body (p: (s32[], f32[8,256])) -> (s32[], f32[8,256]) {
  %p = (s32[], f32[8,256]{1,0}) parameter(0)
  %i = s32[] get-tuple-element(%p), index=0
  %x = f32[8,256]{1,0} get-tuple-element(%p), index=1
  %one = s32[] constant(1)
  %next = s32[] add(%i, %one)
  %y = f32[8,256]{1,0} fusion(%x), kind=kLoop, calls=%fused_sine
  ROOT %t = (s32[], f32[8,256]{1,0}) tuple(%next, %y)
}

%fused_sine (param_0: f32[8,256]) -> f32[8,256] {
  %param_0 = f32[8,256]{1,0} parameter(0)
  ROOT %s = f32[8,256]{1,0} sine(%param_0)
}

%cond (q: (s32[], f32[8,256])) -> pred[] {
  %q = (s32[], f32[8,256]{1,0}) parameter(0)
  %j = s32[] get-tuple-element(%q), index=0
  %n = s32[] constant(12)
  ROOT %lt = pred[] compare(%j, %n), direction=LT
}

ENTRY %main (a: f32[8,256]) -> (s32[], f32[8,256]) {
  %a = f32[8,256]{1,0} parameter(0)
  %zero = s32[] constant(0)
  %init = (s32[], f32[8,256]{1,0}) tuple(%zero, %a)
  ROOT %w = (s32[], f32[8,256]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"12"}}
}
"""


def test_loops_are_counted():
  assert hlo_facts.facts(LOOP)['loops'] == 1
  assert hlo_facts.facts(MODULE)['loops'] == 0
