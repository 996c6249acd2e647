from ..recorder import record


class MoEConfig:
    """SMP v2's MoE configuration; the double keeps the arguments it was given."""

    def __init__(self, smp_moe=True, random_seed=12345, moe_load_balancing="sinkhorn", global_token_shuffle=False,
                 moe_all_to_all_dispatcher=True, moe_aux_loss_coeff=0.001, moe_z_loss_coeff=0.001):
        self.arguments = dict(smp_moe=smp_moe, random_seed=random_seed, moe_load_balancing=moe_load_balancing,
                              global_token_shuffle=global_token_shuffle,
                              moe_all_to_all_dispatcher=moe_all_to_all_dispatcher,
                              moe_aux_loss_coeff=moe_aux_loss_coeff, moe_z_loss_coeff=moe_z_loss_coeff)
        record("MoEConfig", **self.arguments)
